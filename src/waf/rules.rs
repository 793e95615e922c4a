//! The rules: what each looks for, how bad a match is, and from which
//! paranoia level it runs. Numbered in the ranges of the OWASP Core Rule
//! Set families so that operators find their way, written for Portico.

use regex::RegexSet;

/// How much a match adds to the request's anomaly score (CRS's values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Critical = 5,
    Error = 4,
    Warning = 3,
    Notice = 2,
}

/// What a rule reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Every inspected value: path, query names and values, cookies, bodies.
    Values,
    /// The `User-Agent` header only.
    UserAgent,
    /// The request head as a whole.
    Head,
}

/// How a rule decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detector {
    /// libinjection's SQL tokenizer and fingerprints.
    Sqli,
    /// libinjection's HTML5 tokenizer.
    Xss,
    /// A pattern over the canonical (decoded, lowercase, comment-free) text.
    Pattern(&'static str),
    /// A check of the request head itself.
    Protocol(Protocol),
}

/// Protocol anomalies: requests no sane client makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// A method outside `allowed_methods`.
    Method,
    /// HTTP/1.1 without a Host header.
    NoHost,
    /// GET or HEAD with a body.
    BodyOnGet,
    /// Both Content-Length and Transfer-Encoding, or several lengths.
    AmbiguousFraming,
}

#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub id: u32,
    pub paranoia: u8,
    pub severity: Severity,
    pub target: Target,
    pub detector: Detector,
    pub message: &'static str,
}

const fn rule(
    id: u32,
    paranoia: u8,
    severity: Severity,
    target: Target,
    detector: Detector,
    message: &'static str,
) -> Rule {
    Rule {
        id,
        paranoia,
        severity,
        target,
        detector,
        message,
    }
}

use Detector::{Pattern, Sqli, Xss};
use Protocol::{AmbiguousFraming, BodyOnGet, Method, NoHost};
use Severity::{Critical, Error, Notice, Warning};
use Target::{Head, UserAgent, Values};

/// Every rule. Value patterns see the canonical text: lowercase, `/**/`
/// and runs of whitespace as one space, `\` as `/`. User-agent patterns see
/// the decoded text, with case ignored.
pub const RULES: &[Rule] = &[
    // 911, 920: protocol.
    rule(
        911100,
        1,
        Critical,
        Head,
        Detector::Protocol(Method),
        "a method this route does not allow",
    ),
    rule(
        920180,
        1,
        Critical,
        Head,
        Detector::Protocol(AmbiguousFraming),
        "ambiguous body framing (request smuggling)",
    ),
    rule(
        920170,
        1,
        Warning,
        Head,
        Detector::Protocol(BodyOnGet),
        "a GET or HEAD request with a body",
    ),
    rule(
        920280,
        1,
        Warning,
        Head,
        Detector::Protocol(NoHost),
        "an HTTP/1.1 request without Host",
    ),
    // 913: scanners and attack tools, by their own names.
    rule(
        913100,
        1,
        Critical,
        UserAgent,
        Pattern(
            r"(?:sqlmap|nikto|nmap|masscan|acunetix|nessus|openvas|wpscan|dirbuster|gobuster|\bdirb\b|zgrab|nuclei|fimap|havij|w3af|arachni|skipfish|jaeles|feroxbuster|\bffuf\b|whatweb|commix|xsstrike|netsparker|appscan|webinspect|burp\s*collaborator|zmeu|morfeus|paros|webshag)",
        ),
        "a scanner or attack tool's user agent",
    ),
    // 930: path traversal and files that are never asked for legitimately.
    rule(
        930100,
        1,
        Critical,
        Values,
        Pattern(r"(?:^|[/;=&])\.\.(?:/|$|;)"),
        "path traversal (../)",
    ),
    rule(
        930120,
        1,
        Critical,
        Values,
        Pattern(
            r"(?:/etc/(?:passwd|shadow|group|hosts|issue|sudoers)|/proc/(?:self|\d+)/(?:environ|cmdline|fd|maps)|(?:^|/)(?:boot|win|system)\.ini\b|windows/system32|/\.(?:git|svn|hg)/|/\.(?:htaccess|htpasswd|env)\b|/var/log/|\bweb\.config\b)",
        ),
        "access to an operating-system or repository file",
    ),
    // 931: remote file inclusion.
    rule(
        931100,
        1,
        Critical,
        Values,
        Pattern(r"^(?:https?|ftps?)://\d{1,3}(?:\.\d{1,3}){3}"),
        "a URL with an IP address as a parameter (remote file inclusion)",
    ),
    rule(
        931110,
        1,
        Critical,
        Values,
        Pattern(r"(?:^|[^a-z])(?:php|file|expect|phar|zip|data|glob|gopher|dict|jar|netdoc)://"),
        "a local or dangerous URL scheme (file inclusion)",
    ),
    rule(
        931130,
        2,
        Error,
        Values,
        Pattern(r"^(?:https?|ftps?)://[^/?#]+.*\?$"),
        "an off-site URL ending in `?` (remote file inclusion)",
    ),
    // 932: operating-system command injection.
    rule(
        932100,
        1,
        Critical,
        Values,
        Pattern(
            r"(?:[;|&`\n]|\$\(|\|\|)\s*(?:/(?:usr/)?s?bin/)?(?:cat|ls|id|whoami|uname|wget|curl|nc|ncat|netcat|bash|sh|zsh|dash|ksh|python[23]?|perl|ruby|php|ping|nslookup|dig|rm|chmod|chown|echo|printenv|env|ps|kill|telnet|ssh|scp|tftp|powershell|cmd(?:\.exe)?|certutil|bitsadmin)\b",
        ),
        "an operating-system command after a shell separator",
    ),
    rule(
        932110,
        1,
        Critical,
        Values,
        Pattern(r"(?:\$\{ifs\}|\$ifs\b|\$\([^)]*\)|`[^`]+`|\|\s*(?:sh|bash)\b|/bin/(?:ba)?sh\b|>\s*/dev/(?:tcp|udp)/)"),
        "shell syntax: command substitution, $IFS, a pipe to a shell",
    ),
    rule(
        932200,
        2,
        Error,
        Values,
        Pattern(r"(?:^|[;|&\s])(?:cat|head|tail|more|less)\s+/"),
        "a file-reading command with an absolute path",
    ),
    // 933: PHP injection.
    rule(
        933100,
        1,
        Critical,
        Values,
        Pattern(
            r"(?:<\?(?:php|=)|\b(?:eval|assert|system|passthru|shell_exec|exec|popen|proc_open|base64_decode|file_get_contents|include|require)(?:_once)?\s*\()",
        ),
        "PHP code or a dangerous PHP function call",
    ),
    // 941: cross-site scripting.
    rule(
        941100,
        1,
        Critical,
        Values,
        Xss,
        "cross-site scripting (HTML5 tokenizer)",
    ),
    rule(
        941110,
        1,
        Critical,
        Values,
        Pattern(
            r"(?:<script\b|<iframe\b|<object\b|<embed\b|<svg\b[^>]*\bon[a-z]+\s*=|\bon(?:error|load|click|mouse\w+|focus|blur|key\w+|submit|change|toggle|begin|animation\w+|pointer\w+)\s*=|(?:java|vb|live)script\s*:|\bsrcdoc\s*=|expression\s*\()",
        ),
        "a script element, an event handler or a script URL",
    ),
    rule(
        941120,
        2,
        Error,
        Values,
        Pattern(
            r"(?:document\.(?:cookie|domain|write)|window\.location|\balert\s*\(|\bprompt\s*\(|\bconfirm\s*\(|fromcharcode|\beval\s*\()",
        ),
        "script that reads cookies, navigates or opens dialogs",
    ),
    // 942: SQL injection.
    rule(942100, 1, Critical, Values, Sqli, "SQL injection (SQL tokenizer)"),
    rule(
        942110,
        1,
        Critical,
        Values,
        Pattern(
            r"(?:\bunion\s+(?:all\s+|distinct\s+)?\(?\s*select\b|\bselect\b.{1,100}?\bfrom\b.{1,100}?\b(?:information_schema|mysql\.|pg_catalog|sysobjects|sqlite_master)|\b(?:sleep|benchmark|pg_sleep)\s*\(|\bwaitfor\s+delay\b|\bload_file\s*\(|\binto\s+(?:out|dump)file\b|;\s*(?:drop|alter|truncate|create|delete|insert|update|shutdown|exec)\b)",
        ),
        "SQL: UNION SELECT, catalog tables, time delays, file access or a stacked statement",
    ),
    rule(
        942120,
        1,
        Critical,
        Values,
        Pattern(
            r#"(?:['"`]\s*(?:or|and|\|\||&&)\s*['"`]?[\w]+['"`]?\s*(?:=|<|>|like\b|is\b)|['"`]\s*(?:or|and)\s+(?:true|false|not|\d)\b|\bor\s+\d+\s*=\s*\d+|['"`]\s*;?\s*--)"#,
        ),
        "SQL: a tautology or a comment after a quote",
    ),
    rule(
        942200,
        2,
        Error,
        Values,
        Pattern(
            r"(?:\b(?:concat|char|chr|ascii|substring|hex|unhex|version|database|user)\s*\(|@@(?:version|datadir|hostname)|\bcast\s*\(.+\bas\b)",
        ),
        "SQL functions that read the server or build strings",
    ),
    // 944: Java: Log4Shell and friends.
    rule(
        944150,
        1,
        Critical,
        Values,
        Pattern(r"\$\{(?:jndi|env|sys|java|lower|upper|date|::-)[^}]*[:}]"),
        "a Log4j lookup (Log4Shell)",
    ),
    // 934: server-side template injection and prototype pollution.
    rule(
        934100,
        2,
        Error,
        Values,
        Pattern(
            r"(?:\{\{.*(?:__class__|__globals__|constructor|config|self|request).*\}\}|\$\{\{|#\{.*\}|__proto__|constructor\s*\[)",
        ),
        "template injection or prototype pollution",
    ),
    // 920: what a sane client does not send in a parameter.
    rule(
        920270,
        1,
        Error,
        Values,
        Pattern(r"[\x01-\x08\x0b\x0c\x0e-\x1f\x7f]"),
        "control characters in a parameter",
    ),
    rule(
        920300,
        3,
        Notice,
        Values,
        Pattern(r"[^\x00-\x7f]{40,}"),
        "a long run of non-ASCII text",
    ),
];

/// The patterns of `rules` as one set, with each pattern's rule.
/// The pattern rules among `rules` as one set; `ignore_case` for text that
/// is not lowercased first (user agents).
pub fn pattern_set(rules: &[&'static Rule], ignore_case: bool) -> Result<(RegexSet, Vec<&'static Rule>), regex::Error> {
    let with_patterns: Vec<&'static Rule> = rules
        .iter()
        .copied()
        .filter(|r| matches!(r.detector, Detector::Pattern(_)))
        .collect();
    let set = regex::RegexSetBuilder::new(with_patterns.iter().map(|r| match r.detector {
        Detector::Pattern(p) => p,
        _ => "",
    }))
    .case_insensitive(ignore_case)
    .build()?;
    Ok((set, with_patterns))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_compiles_and_ids_are_unique() {
        let all: Vec<&'static Rule> = RULES.iter().collect();
        pattern_set(&all, false).unwrap();
        let mut ids: Vec<u32> = RULES.iter().map(|r| r.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), RULES.len());
    }
}
