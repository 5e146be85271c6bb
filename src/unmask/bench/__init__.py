"""Benchmarks behind ``unmask bench``: each module runs one study and writes its report."""
