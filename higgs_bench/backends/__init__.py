"""Backends serve the decode loop's interface (higgs_bench.generate.backend.Backend)."""
