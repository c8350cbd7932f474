"""Labels in other languages: glossary, semantic and machine translation, label presets."""
