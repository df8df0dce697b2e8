"""Process and build helpers shared by the stand-ins: local ports and processes, cached Maven/Go builds."""
