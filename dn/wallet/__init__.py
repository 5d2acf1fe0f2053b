"""Keys and the password-sealed keystore."""
