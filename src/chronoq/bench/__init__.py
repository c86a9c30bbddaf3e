"""``chronoq bench``: measurements of a chronoq deployment (this machine's or your own)."""
