"""The storage contract suite: every Store backend passes the same tests."""
