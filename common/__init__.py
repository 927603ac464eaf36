"""Infrastructure shared by both services: auth, errors, server bootstrap, database."""
