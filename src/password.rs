//! Stored password hashes (bcrypt and argon2): checked when a config is
//! built, verified by `basic_auth`, made by `portico hash-password`.

/// Checks that a stored password hash is one Portico can verify.
pub fn check_hash(hash: &str) -> Result<(), String> {
    let fix = "store a bcrypt or argon2 hash, as `portico hash-password` prints, never the password";
    if hash.starts_with("$2a$") || hash.starts_with("$2b$") || hash.starts_with("$2y$") {
        return hash
            .parse::<bcrypt::HashParts>()
            .map(|_| ())
            .map_err(|_| format!("not a valid bcrypt hash: {fix}"));
    }
    if hash.starts_with("$argon2") {
        return argon2::PasswordHash::new(hash)
            .map(|_| ())
            .map_err(|_| format!("not a valid argon2 hash: {fix}"));
    }
    Err(format!("unknown hash format: {fix}"))
}

/// Verifies `password` against a bcrypt or argon2 hash. Slow on purpose.
pub fn verify(password: &[u8], hash: &str) -> bool {
    if hash.starts_with("$argon2") {
        use argon2::PasswordVerifier;
        return argon2::PasswordHash::new(hash)
            .is_ok_and(|parsed| argon2::Argon2::default().verify_password(password, &parsed).is_ok());
    }
    bcrypt::verify(password, hash).unwrap_or(false)
}

/// Hashes a password for the config: bcrypt (cost 12), or argon2id.
pub fn hash(password: &str, argon: bool) -> Result<String, String> {
    if argon {
        use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
        let salt = SaltString::generate(&mut OsRng);
        argon2::Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| e.to_string())
    } else {
        bcrypt::hash(password, 12).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_bad_ones_are_refused() {
        let argon = hash("s3cret", true).unwrap();
        assert!(check_hash(&argon).is_ok());
        assert!(verify(b"s3cret", &argon));
        assert!(!verify(b"wrong", &argon));
        // Cost 4 keeps the test fast; the command uses 12.
        let bcrypt = bcrypt::hash("s3cret", 4).unwrap();
        assert!(check_hash(&bcrypt).is_ok());
        assert!(verify(b"s3cret", &bcrypt));
        assert!(check_hash("s3cret").unwrap_err().contains("never the password"));
        assert!(check_hash("$2b$12$short").is_err());
    }
}
