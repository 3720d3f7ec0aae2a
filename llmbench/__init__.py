"""llmbench: measure what LLM training optimizations really buy on this machine."""

__version__ = "0.1.0"
