"""NumPy references: the specification every other backend is tested against (float32 and float64)."""
