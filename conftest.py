"""Repository-wide pytest configuration; the fixtures live in labornet.shared.testing."""
