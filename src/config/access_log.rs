//! Validation of `[access_log]`: where the lines go, their format (a template over the log's
//! own variables, or the `combined` and `json` presets), how values are escaped, and how much
//! each worker buffers before a write.

use super::raw::RawAccessLog;
use super::template::{var_arg, Piece, Template};
use super::{ConfigError, Validator};
use std::path::PathBuf;

/// Each worker's buffer before it hands its lines to the writer (nginx's `buffer=`); it is
/// also handed over on every control tick, so a quiet worker's lines are at most 250 ms late.
const DEFAULT_BUFFER: u64 = 64 * 1024;

/// nginx's `combined` format, so existing log tooling reads Ringway's lines as they are.
pub const COMBINED: &str = "${client_ip} - - [${time_local}] \"${request}\" ${status} \
    ${body_bytes_sent} \"${header.referer}\" \"${header.user-agent}\"";

/// One JSON object per line; numbers unquoted, every other value a JSON string.
pub const JSON: &str = "{\"time\":\"${time_iso8601}\",\"client_ip\":\"${client_ip}\",\
    \"method\":\"${method}\",\"host\":\"${host}\",\"target\":\"${target}\",\
    \"protocol\":\"${protocol}\",\"status\":${status},\"bytes_sent\":${bytes_sent},\
    \"request_time\":${request_time},\"route\":\"${route}\",\"upstream_addr\":\"${upstream_addr}\",\
    \"upstream_status\":\"${upstream_status}\",\"upstream_header_time\":\"${upstream_header_time}\",\
    \"request_id\":\"${request_id}\",\"user_agent\":\"${header.user-agent}\"}";

/// The access log: one line per request, written off the workers' threads.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLog {
    pub target: LogTarget,
    pub format: Template<LogVar>,
    pub escape: LogEscape,
    /// Bytes a worker gathers before it hands them to the writer.
    pub buffer: usize,
    /// The format reads `request_time`: each request reads the clock at its start and end.
    pub times_request: bool,
    /// The format reads `upstream_header_time`: each try reads the clock twice.
    pub times_upstream: bool,
    /// The format reads a `response_header.NAME`: each response head is kept for it.
    pub reads_response_headers: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// Appended to (created 0644 when missing); reopened on SIGUSR1 for log rotation.
    File(PathBuf),
    /// The process's standard output (a container's log collector).
    Stdout,
}

impl std::fmt::Display for LogTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogTarget::File(p) => write!(f, "{}", p.display()),
            LogTarget::Stdout => f.write_str("stdout"),
        }
    }
}

/// How variable values are written (literals are written as they are).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogEscape {
    /// nginx's default: `"`, `\`, control and non-ASCII bytes as `\xHH`; an empty value as `-`.
    Default,
    /// JSON string escapes; an empty value stays empty.
    Json,
    /// As received; an empty value as `-`.
    None,
}

/// A variable of the access log's format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogVar {
    ClientIp,
    /// `01/Dec/2026:06:31:22 +0000` (UTC), when the line is written.
    TimeLocal,
    /// `2026-12-01T06:31:22+00:00` (UTC).
    TimeIso8601,
    /// Seconds since the epoch with milliseconds.
    Msec,
    /// The request line: method, target and protocol.
    Request,
    Method,
    /// The target as sent: path and query.
    Target,
    Path,
    Query,
    /// `HTTP/1.1` or `HTTP/1.0`.
    Protocol,
    /// `http` or `https`.
    Scheme,
    Host,
    /// A request header by lower-case name.
    Header(String),
    /// The client's request id, or the one Ringway made for the request.
    RequestId,
    /// The route's name (empty when none matched).
    Route,
    /// The route's upstream's name (empty for routes that answer themselves).
    Upstream,
    /// The status sent to the client (499 when the client left before any answer).
    Status,
    /// Bytes sent to the client, head included.
    BytesSent,
    BodyBytesSent,
    /// Seconds from the request's head to the end of its response, with milliseconds.
    RequestTime,
    /// Every upstream server tried, comma-separated as nginx writes them.
    UpstreamAddr,
    /// Each try's response status (`-` for a try that got none).
    UpstreamStatus,
    /// Each try's seconds from the pick of the server to the response head.
    UpstreamHeaderTime,
    /// A header of the response sent to the client, by lower-case name (the cache's status
    /// header, for one).
    ResponseHeader(String),
}

impl LogVar {
    /// Known once the request is planned (its values are kept from then); the rest once the
    /// response has been sent.
    pub fn from_request(&self) -> bool {
        matches!(
            self,
            LogVar::ClientIp
                | LogVar::Request
                | LogVar::Method
                | LogVar::Target
                | LogVar::Path
                | LogVar::Query
                | LogVar::Protocol
                | LogVar::Scheme
                | LogVar::Host
                | LogVar::Header(_)
                | LogVar::RequestId
                | LogVar::Route
                | LogVar::Upstream
        )
    }
}

fn parse_var(name: &str) -> Result<LogVar, String> {
    let arg = |prefix: &str| var_arg(name, prefix).map(|a| a.map(|a| a.to_ascii_lowercase()));
    if let Some(h) = arg("header.")? {
        return Ok(LogVar::Header(h));
    }
    if let Some(h) = arg("response_header.")? {
        return Ok(LogVar::ResponseHeader(h));
    }
    Ok(match name {
        "client_ip" => LogVar::ClientIp,
        "time_local" => LogVar::TimeLocal,
        "time_iso8601" => LogVar::TimeIso8601,
        "msec" => LogVar::Msec,
        "request" => LogVar::Request,
        "method" => LogVar::Method,
        "target" => LogVar::Target,
        "path" => LogVar::Path,
        "query" => LogVar::Query,
        "protocol" => LogVar::Protocol,
        "scheme" => LogVar::Scheme,
        "host" => LogVar::Host,
        "request_id" => LogVar::RequestId,
        "route" => LogVar::Route,
        "upstream" => LogVar::Upstream,
        "status" => LogVar::Status,
        "bytes_sent" => LogVar::BytesSent,
        "body_bytes_sent" => LogVar::BodyBytesSent,
        "request_time" => LogVar::RequestTime,
        "upstream_addr" => LogVar::UpstreamAddr,
        "upstream_status" => LogVar::UpstreamStatus,
        "upstream_header_time" => LogVar::UpstreamHeaderTime,
        _ => {
            return Err(format!(
                "unknown variable ${{{name}}} (known: client_ip, time_local, time_iso8601, msec, \
                 request, method, target, path, query, protocol, scheme, host, request_id, route, \
                 upstream, status, bytes_sent, body_bytes_sent, request_time, upstream_addr, \
                 upstream_status, upstream_header_time, header.NAME, response_header.NAME)"
            ))
        }
    })
}

impl Validator<'_> {
    pub(super) fn access_log(&self, a: &RawAccessLog) -> Result<AccessLog, ConfigError> {
        let target = match a.path.as_str() {
            "" => return Err(self.err("access_log.path", "must name a file, or \"stdout\"")),
            "stdout" => LogTarget::Stdout,
            p => LogTarget::File(PathBuf::from(p)),
        };
        let (text, preset_escape) = match a.format.as_deref() {
            None | Some("combined") => (COMBINED, LogEscape::Default),
            Some("json") => (JSON, LogEscape::Json),
            Some(t) => (t, LogEscape::Default),
        };
        let format =
            Template::parse_with(text, parse_var).map_err(|e| self.err("access_log.format", e))?;
        if !format.pieces.iter().any(|p| matches!(p, Piece::Var(_))) {
            return Err(self.err(
                "access_log.format",
                "has no ${variable}: every line would be the same",
            ));
        }
        let escape = match a.escape.as_deref() {
            None => preset_escape,
            Some("default") => LogEscape::Default,
            Some("json") => LogEscape::Json,
            Some("none") => LogEscape::None,
            Some(other) => {
                return Err(self.err(
                    "access_log.escape",
                    format!("unknown escape {other:?} (known: default, json, none)"),
                ))
            }
        };
        let buffer = self.size("access_log.buffer", a.buffer.as_ref(), DEFAULT_BUFFER)?;
        if !(4096..=16 * 1024 * 1024).contains(&buffer) {
            return Err(self.err(
                "access_log.buffer",
                format!("{buffer} bytes is out of range (4KiB..=16MiB)"),
            ));
        }
        // A clock read costs about as much as the rest of a line; only the format's are made.
        let reads = |f: fn(&LogVar) -> bool| format.vars().any(f);
        let times_request = reads(|v| *v == LogVar::RequestTime);
        let times_upstream = reads(|v| *v == LogVar::UpstreamHeaderTime);
        let reads_response_headers = reads(|v| matches!(v, LogVar::ResponseHeader(_)));
        Ok(AccessLog {
            target,
            times_request,
            times_upstream,
            reads_response_headers,
            format,
            escape,
            buffer: buffer as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_parse() {
        for t in [COMBINED, JSON] {
            Template::parse_with(t, parse_var).unwrap();
        }
    }

    #[test]
    fn variables() {
        let t = Template::parse_with(
            "${status} ${header.X-Real} ${response_header.x-cache}",
            parse_var,
        )
        .unwrap();
        let vars: Vec<_> = t.vars().cloned().collect();
        assert_eq!(
            vars,
            vec![
                LogVar::Status,
                LogVar::Header("x-real".into()),
                LogVar::ResponseHeader("x-cache".into())
            ]
        );
        assert!(!LogVar::Status.from_request());
        assert!(LogVar::Header("a".into()).from_request());
        assert!(Template::parse_with("${remote_addr}", parse_var)
            .unwrap_err()
            .contains("unknown variable"));
    }
}
