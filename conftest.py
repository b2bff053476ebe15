import os

# Tests run with DEBUG off, like production; they need a key but no real secret.
os.environ.setdefault("SECRET_KEY", "test-only-secret-key-not-for-production-use-0123456789")
