"""`dvc plots show` that draws offline: an HTML template with Vega, Vega-Lite and vega-embed inlined.

    python -m cliffdata.publish.plots plots/offline.html        # what `make plots` runs, then
    dvc plots show --html-template plots/offline.html -o plots/html

DVC's default page loads the three libraries from a CDN, so it is blank without network. The bundle
comes from the `vl-convert-python` package (installed from the lock, no download at run time); the
template has no `{scripts}` placeholder, so DVC adds no CDN tags, only `{plot_divs}`.
"""
from __future__ import annotations

import sys
from pathlib import Path

VEGA_LITE = "v5.21"          # DVC's plot templates are Vega-Lite v5 specs

TEMPLATE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>cliffdata plots</title>
<script>
/* Vega {vega}, Vega-Lite {vega_lite}, vega-embed {vega_embed}: bundled by vl-convert-python {vl_convert} */
{bundle}
</script>
<style>
body {{ font-family: system-ui, sans-serif; margin: 16px; }}
table {{ border-spacing: 15px; }}
</style>
</head>
<body>
<h1 style="font-size:18px">cliffdata plots (offline)</h1>
PLOT_DIVS
</body>
</html>
"""


def offline_template() -> str:
    """The page text: the libraries inlined, `{plot_divs}` where DVC puts the plots."""
    import vl_convert

    bundle = vl_convert.javascript_bundle(vl_version=VEGA_LITE)
    # inline JavaScript must not close its own element, and DVC fills the template with str.replace
    bundle = bundle.replace("</script", "<\\/script")
    for placeholder in ("{plot_divs}", "{scripts}", "{refresh_tag}"):
        if placeholder in bundle:
            raise ValueError(f"the JavaScript bundle contains DVC's placeholder {placeholder}")
    page = TEMPLATE.format(vega=vl_convert.get_vega_version(), vega_lite=VEGA_LITE,
                           vega_embed=vl_convert.get_vega_embed_version(), vl_convert=vl_convert.__version__,
                           bundle="BUNDLE")
    return page.replace("PLOT_DIVS", "{plot_divs}").replace("BUNDLE", bundle)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m cliffdata.publish.plots TEMPLATE.html", file=sys.stderr)
        return 2
    out = Path(args[0])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(offline_template(), encoding="utf-8")
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
