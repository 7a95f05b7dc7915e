"""Data layer: official dataset parsers, the uint8 cache writer/reader, and splits."""
