"""The live Tk window."""
