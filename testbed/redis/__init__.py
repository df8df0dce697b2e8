"""The fleet quota's coordinator as production runs it: Debian's Redis server."""
