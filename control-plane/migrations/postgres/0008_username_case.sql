-- Usernames are unique regardless of case (`Alice` and `alice` would be look-alike logins);
-- login finds a user by `lower(username)`. Usernames are ASCII (the API refuses anything
-- else), so lower() means the same here as on SQLite.
CREATE UNIQUE INDEX users_username_lower ON users (lower(username));
