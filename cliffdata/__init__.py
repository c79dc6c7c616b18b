"""cliffdata: find cliff tokens in LLM math reasoning."""
