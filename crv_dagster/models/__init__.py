"""Where model weights come from: the Hub, a GGUF file inside a package, or a tiny model built here."""
