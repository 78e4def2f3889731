"""Task families and their data sources; each module registers what it defines on import."""
