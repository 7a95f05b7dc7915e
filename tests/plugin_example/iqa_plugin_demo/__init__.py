"""A minimal third-party IQA method for `iqa`, used by the plugin test and the README's Architecture
section: one network (`net.py`) and one recipe (`recipe.py`), found through entry points."""
