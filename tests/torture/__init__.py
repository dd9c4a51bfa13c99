"""Crash torture: many runs, worker processes SIGKILLed at random moments, checked from SQL."""
