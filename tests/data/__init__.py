"""Test data the tests make themselves (tones, encoded files, tiny random models), and the way to
the shared data beside the repository (../shared), which tests skip without (CI requires it)."""
