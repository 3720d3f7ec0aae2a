"""What every benchmark shares: hardware, profiles, timing, memory, isolation, results."""
