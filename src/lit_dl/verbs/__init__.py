"""One entry point per verb: ``lit-dl train | eval | predict``."""
