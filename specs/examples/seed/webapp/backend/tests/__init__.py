"""Tests of the backend."""
