"""The command line: parse flags, build a config, call the library, render. No computing here."""
