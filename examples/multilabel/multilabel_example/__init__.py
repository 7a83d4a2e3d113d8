"""A multi-label classifier on a table, built on lit_dl from outside its source tree."""
