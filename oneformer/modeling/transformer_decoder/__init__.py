"""Transformer decoder, class transformer, text encoder and positional encodings."""
