-- Usernames are unique regardless of case (`Alice` and `alice` would be look-alike logins);
-- login finds a user by `lower(username)`. Usernames are ASCII (the API refuses anything
-- else), so SQLite's ASCII-only lower() is exact.
CREATE UNIQUE INDEX users_username_lower ON users (lower(username));
