"""Request stages between the HTTP layer and the engines; no HTTP here."""
