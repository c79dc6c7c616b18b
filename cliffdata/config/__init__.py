"""The params, validated: one frozen dataclass per `params.yaml` section, in a module per part of the
package (`search.RolloutsConfig`, `cliffs.CliffTest`, ...), `params.Params` of them all, `load.load_params`
to read the file. An unknown key, a wrong type or an out-of-range value is an error naming `section.key`."""
