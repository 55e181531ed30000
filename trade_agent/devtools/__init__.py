"""Developer tools that keep the build honest (not imported by any stage)."""
