"""File primitives every layer may use: atomic writes, safe YAML, bounded reads, signals, user limits, caches."""
