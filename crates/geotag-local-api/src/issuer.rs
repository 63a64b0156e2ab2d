//! The local token issuer: what Cognito is to a deployed stack.
//!
//! `geotag up` makes an ES256 key pair at start and keeps it in
//! [`STATE_DIR`], so that `geotag token` (another process) signs with it;
//! the next `geotag up` makes a new one, and the tokens of the last run stop
//! working, as they should. Tokens look like Cognito's access tokens
//! (`cognito:groups`, `scope`, `client_id`, `token_use`), so the handler
//! reads them as it reads Cognito's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde_json::{Map, Value, json};

/// Where `geotag up` keeps the issuer's key, under the project root.
pub const STATE_DIR: &str = "target/geotag/api";
const KEY_FILE: &str = "issuer.json";
/// The `iss` of local tokens (Cognito's would name the user pool).
pub const LOCAL_ISSUER: &str = "http://127.0.0.1/geotag-local-issuer";
/// The audience the local authorizer requires (the app client id, in Cognito's terms).
pub const AUDIENCE: &str = "geotag-local-map";

/// Whom a token is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Customer(String),
    Operator,
}

pub struct LocalIssuer {
    pub issuer: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    private_pem: String,
    public_pem: String,
}

/// Why the authorizer refused a token (API Gateway says why in
/// `WWW-Authenticate`, and nothing in the body).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl LocalIssuer {
    /// A new key pair; `issuer` is the URL the tokens name.
    pub fn generate(issuer: &str) -> Result<LocalIssuer> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        LocalIssuer::from_pem(issuer, &key.serialize_pem(), &key.public_key_pem())
    }

    fn from_pem(issuer: &str, private_pem: &str, public_pem: &str) -> Result<LocalIssuer> {
        Ok(LocalIssuer {
            issuer: issuer.to_owned(),
            encoding: EncodingKey::from_ec_pem(private_pem.as_bytes())?,
            decoding: DecodingKey::from_ec_pem(public_pem.as_bytes())?,
            private_pem: private_pem.to_owned(),
            public_pem: public_pem.to_owned(),
        })
    }

    fn file(state_dir: &Path) -> PathBuf {
        state_dir.join(KEY_FILE)
    }

    /// Keeps the key where `geotag token` finds it, readable by this user only.
    pub fn save(&self, state_dir: &Path) -> Result<()> {
        std::fs::create_dir_all(state_dir)?;
        let path = LocalIssuer::file(state_dir);
        let text = json!({
            "issuer": self.issuer,
            "private_key_pem": self.private_pem,
            "public_key_pem": self.public_pem,
        })
        .to_string();
        write_private(&path, &text).with_context(|| format!("writing {}", path.display()))
    }

    /// The issuer of the running `geotag up`.
    pub fn load(state_dir: &Path) -> Result<LocalIssuer> {
        let path = LocalIssuer::file(state_dir);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "no local issuer at {} (start `geotag up` first: it makes the keys)",
                path.display()
            )
        })?;
        let saved: Value = serde_json::from_str(&text)?;
        let field = |name: &str| saved[name].as_str().map(str::to_owned);
        match (
            field("issuer"),
            field("private_key_pem"),
            field("public_key_pem"),
        ) {
            (Some(issuer), Some(private), Some(public)) => {
                LocalIssuer::from_pem(&issuer, &private, &public)
            }
            _ => bail!("{} is not a local issuer's key file", path.display()),
        }
    }

    /// A signed token for `subject`, valid for `valid_for` from `now_secs`.
    pub fn token(&self, subject: &Subject, valid_for: Duration, now_secs: u64) -> Result<String> {
        let mut claims = json!({
            "iss": self.issuer,
            "aud": AUDIENCE,
            "client_id": AUDIENCE,
            "token_use": "access",
            "iat": now_secs,
            "exp": now_secs + valid_for.as_secs(),
        });
        match subject {
            Subject::Customer(customer) => {
                claims["sub"] = json!(format!("local-user-{customer}"));
                claims["cognito:groups"] = json!([format!("customer:{customer}")]);
                claims["scope"] = json!("openid");
            }
            Subject::Operator => {
                claims["sub"] = json!("local-operator");
                claims["cognito:groups"] = json!(["geotag-operators"]);
                claims["scope"] = json!("openid geotag/operator");
            }
        }
        Ok(encode(
            &Header::new(Algorithm::ES256),
            &claims,
            &self.encoding,
        )?)
    }

    /// The claims of a token this issuer signed, still valid, for [`AUDIENCE`];
    /// what API Gateway's JWT authorizer checks.
    pub fn verify(&self, token: &str) -> Result<Map<String, Value>, Refusal> {
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.leeway = 0;
        decode::<Map<String, Value>>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|error| Refusal(error.to_string()))
    }
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_796_112_000;

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn its_tokens_verify_and_others_do_not() {
        let issuer = LocalIssuer::generate("http://127.0.0.1:1/local").unwrap();
        let token = issuer
            .token(
                &Subject::Customer("acme".into()),
                Duration::from_secs(600),
                now(),
            )
            .unwrap();
        let claims = issuer.verify(&token).unwrap();
        assert_eq!(claims["cognito:groups"], json!(["customer:acme"]));

        let expired = issuer
            .token(&Subject::Operator, Duration::from_secs(60), NOW - 86_400)
            .unwrap();
        assert!(issuer.verify(&expired).unwrap_err().0.contains("Expired"));

        let stranger = LocalIssuer::generate("http://127.0.0.1:1/local").unwrap();
        let forged = stranger
            .token(&Subject::Operator, Duration::from_secs(600), now())
            .unwrap();
        assert!(issuer.verify(&forged).is_err(), "another key's signature");

        // The same claims, unsigned (alg none), and a payload swapped under
        // a valid signature.
        let parts: Vec<&str> = token.split('.').collect();
        let unsigned = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1]);
        assert!(issuer.verify(&unsigned).is_err());
        let swapped = format!(
            "{}.{}.{}",
            parts[0],
            forged.split('.').nth(1).unwrap(),
            parts[2]
        );
        assert!(issuer.verify(&swapped).is_err());
        assert!(issuer.verify("not a token").is_err());
    }

    #[test]
    fn a_saved_issuer_signs_for_the_running_one() {
        let dir = std::env::temp_dir().join(format!("geotag-issuer-{}", std::process::id()));
        let issuer = LocalIssuer::generate("http://127.0.0.1:2/local").unwrap();
        issuer.save(&dir).unwrap();
        let loaded = LocalIssuer::load(&dir).unwrap();
        let token = loaded
            .token(&Subject::Operator, Duration::from_secs(600), now())
            .unwrap();
        assert!(issuer.verify(&token).is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
