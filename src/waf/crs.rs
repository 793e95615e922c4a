//! The OWASP Core Rule Set itself, run by libmodsecurity (v3, through the
//! `modsecurity-sys` bindings), for users who need CRS and not a rule set
//! in its families. Built only with the `crs` cargo feature; Debian's
//! `libmodsecurity-dev` and `modsecurity-crs` provide the library and rules.
//!
//! The unsafe code is here and only here: each libmodsecurity object is
//! owned by one Rust value and freed in its `Drop`.

use modsecurity_sys as msc;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::Arc;

/// The library and a loaded rule set, shared by every request of a route.
pub struct Crs {
    library: Arc<Library>,
    rules: *mut msc::RulesSet,
}

// libmodsecurity's rule set is read-only once loaded, and transactions
// made from it on several threads at once are how its connectors (nginx
// workers, Envoy) use it; each transaction is used by one thread only.
unsafe impl Send for Crs {}
unsafe impl Sync for Crs {}

/// One `msc_init`, for the life of the process: ModSecurity's global state
/// (its log callback) is set up once and shared by every rule set.
struct Library(*mut msc::ModSecurity);

unsafe impl Send for Library {}
unsafe impl Sync for Library {}

impl Drop for Library {
    fn drop(&mut self) {
        // SAFETY: made by msc_init, freed once, after every rule set holding it.
        unsafe { msc::msc_cleanup(self.0) }
    }
}

fn library() -> Arc<Library> {
    static LIBRARY: std::sync::OnceLock<Arc<Library>> = std::sync::OnceLock::new();
    LIBRARY
        .get_or_init(|| {
            // SAFETY: msc_init has no preconditions; the connector string is copied.
            unsafe {
                let library = msc::msc_init();
                let name = c"portico";
                msc::msc_set_connector_info(library, name.as_ptr());
                msc::msc_set_log_cb(library, Some(collect_message));
                Arc::new(Library(library))
            }
        })
        .clone()
}

/// What libmodsecurity reports of each rule that matched, collected into
/// the transaction's `Vec<String>` (the callback data it was made with).
unsafe extern "C" fn collect_message(data: *mut c_void, message: *const c_void) {
    if data.is_null() || message.is_null() {
        return;
    }
    // SAFETY: `data` is the transaction's message list, alive while the
    // transaction runs on this thread; `message` is a C string.
    let (messages, text) = unsafe {
        (
            &mut *(data as *mut Vec<String>),
            CStr::from_ptr(message as *const c_char),
        )
    };
    messages.push(text.to_string_lossy().into_owned());
}

impl Crs {
    /// Loads `rules` (ModSecurity directives, `Include`s allowed); the error
    /// is libmodsecurity's, naming the file and line.
    pub fn load(rules: &str) -> Result<Crs, String> {
        // libmodsecurity's rule parser keeps global state: one load at a time.
        static LOADING: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = LOADING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let library = library();
        let text = CString::new(rules).map_err(|_| "the rules contain a NUL byte".to_string())?;
        // SAFETY: the rule set is ours until Drop; `error` is set by the
        // library to a string it allocated, freed here.
        unsafe {
            let set = msc::msc_create_rules_set();
            let crs = Crs { library, rules: set };
            let mut error: *const c_char = std::ptr::null();
            if msc::msc_rules_add(set, text.as_ptr(), &mut error) < 0 {
                let message = if error.is_null() {
                    "libmodsecurity refused the rules".to_string()
                } else {
                    let message = CStr::from_ptr(error).to_string_lossy().trim().to_string();
                    libc::free(error as *mut c_void);
                    message
                };
                return Err(message);
            }
            Ok(crs)
        }
    }

    /// Runs one request through the rules: connection, URI, headers, then
    /// `body` (what was read of it).
    pub fn evaluate(&self, request: &Request<'_>) -> Outcome {
        let mut messages: Box<Vec<String>> = Box::default();
        // SAFETY: the transaction is freed by `Transaction`'s Drop before
        // `messages` (declared first, dropped last) goes.
        let transaction = unsafe {
            Transaction(msc::msc_new_transaction(
                self.library.0,
                self.rules,
                &mut *messages as *mut Vec<String> as *mut c_void,
            ))
        };
        let intervention = transaction.run(request);
        drop(transaction);
        Outcome {
            intervention,
            messages: *messages,
        }
    }
}

impl Drop for Crs {
    fn drop(&mut self) {
        // SAFETY: made by msc_create_rules_set; no transaction outlives `self`.
        unsafe {
            msc::msc_rules_cleanup(self.rules);
        }
    }
}

/// A request as ModSecurity sees it.
pub struct Request<'a> {
    pub client: std::net::SocketAddr,
    pub method: &'a str,
    pub uri: &'a str,
    pub version: &'a str,
    pub headers: &'a http::HeaderMap,
    pub body: &'a [u8],
}

/// What the rules decided, and the message of each rule that matched.
pub struct Outcome {
    /// The HTTP status of a disruptive action (a block), if one was taken.
    pub intervention: Option<u16>,
    pub messages: Vec<String>,
}

struct Transaction(*mut msc::Transaction);

impl Transaction {
    fn run(&self, request: &Request<'_>) -> Option<u16> {
        let text = |s: &str| CString::new(s.replace('\0', "")).unwrap_or_default();
        let (client, uri, method, version) = (
            text(&request.client.ip().to_string()),
            text(request.uri),
            text(request.method),
            text(request.version),
        );
        let server = c"0.0.0.0";
        // SAFETY: every pointer is to a live buffer with its length (or a
        // C string) for the duration of the call; the library copies them.
        unsafe {
            msc::msc_process_connection(
                self.0,
                client.as_ptr(),
                c_int::from(request.client.port()),
                server.as_ptr(),
                0,
            );
            msc::msc_process_uri(self.0, uri.as_ptr(), method.as_ptr(), version.as_ptr());
            for (name, value) in request.headers {
                msc::msc_add_n_request_header(
                    self.0,
                    name.as_str().as_ptr(),
                    name.as_str().len(),
                    value.as_bytes().as_ptr(),
                    value.len(),
                );
            }
            msc::msc_process_request_headers(self.0);
            if let Some(status) = self.intervention() {
                return Some(status);
            }
            if !request.body.is_empty() {
                msc::msc_append_request_body(self.0, request.body.as_ptr(), request.body.len());
            }
            msc::msc_process_request_body(self.0);
            let status = self.intervention();
            msc::msc_process_logging(self.0);
            status
        }
    }

    fn intervention(&self) -> Option<u16> {
        let mut it = msc::ModSecurityIntervention {
            status: 200,
            pause: 0,
            url: std::ptr::null_mut(),
            log: std::ptr::null_mut(),
            disruptive: 0,
        };
        // SAFETY: `it` is ours; the strings the library may allocate in it are freed here.
        unsafe {
            let disruptive = msc::msc_intervention(self.0, &mut it) != 0;
            for text in [it.url, it.log] {
                if !text.is_null() {
                    libc::free(text as *mut c_void);
                }
            }
            (disruptive && it.disruptive != 0).then(|| u16::try_from(it.status).unwrap_or(403))
        }
    }
}

impl Drop for Transaction {
    fn drop(&mut self) {
        // SAFETY: made by msc_new_transaction, freed once.
        unsafe { msc::msc_transaction_cleanup(self.0) }
    }
}

/// A rule's id and message from one of libmodsecurity's match messages,
/// never the matched data (which may be the attack itself).
pub fn rule_of(message: &str) -> Option<(u32, String)> {
    let field = |name: &str| {
        let start = message.find(&format!("[{name} \""))? + name.len() + 3;
        let end = message[start..].find("\"]")? + start;
        Some(message[start..end].to_string())
    };
    let id = field("id")?.parse().ok()?;
    Some((id, field("msg").unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_and_messages_come_from_a_match_message() {
        let message = r#"ModSecurity: Warning. detected SQLi using libinjection. [file "/usr/share/modsecurity-crs/rules/REQUEST-942-APPLICATION-ATTACK-SQLI.conf"] [line "65"] [id "942100"] [msg "SQL Injection Attack Detected via libinjection"] [data "Matched Data: s&sos found within ARGS:q: 1' or '1'='1"]"#;
        assert_eq!(
            rule_of(message),
            Some((942100, "SQL Injection Attack Detected via libinjection".to_string()))
        );
        assert_eq!(rule_of("no rule here"), None);
    }
}
