"""pagedserve: an LLM serving runtime for CPU machines."""
