//! Why a request failed, as one vocabulary for responses, `Cache-Status`
//! detail, the `kind` metric label and the access log.

use pingora_error::{Error, ErrorSource, ErrorType};

/// A failure's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The origin answered with an error status that we pass on.
    Status,
    /// The site's fail-closed policy module failed.
    PolicyFailed,
    /// The site names a policy module that is not loaded.
    PolicyMissing,
    /// The origin did not accept the connection in time.
    OriginConnectTimeout,
    /// The origin did not answer (or read) in time.
    OriginTimeout,
    /// The origin refused the connection.
    OriginRefused,
    /// No route to the origin.
    OriginUnreachable,
    /// The origin closed the connection early.
    OriginClosed,
    /// Any other origin failure.
    OriginError,
    /// The client went away: nothing to answer.
    ClientGone,
    /// The client's request could not be read.
    BadRequest,
    /// The client's request body outgrew `limits.max_body_bytes`.
    RequestTooLarge,
    /// A failure of this proxy.
    InternalError,
}

impl ErrorKind {
    /// Every kind.
    pub const ALL: [ErrorKind; 13] = [
        ErrorKind::Status,
        ErrorKind::PolicyFailed,
        ErrorKind::PolicyMissing,
        ErrorKind::OriginConnectTimeout,
        ErrorKind::OriginTimeout,
        ErrorKind::OriginRefused,
        ErrorKind::OriginUnreachable,
        ErrorKind::OriginClosed,
        ErrorKind::OriginError,
        ErrorKind::ClientGone,
        ErrorKind::BadRequest,
        ErrorKind::RequestTooLarge,
        ErrorKind::InternalError,
    ];

    /// The token used in metrics, logs and `Cache-Status` detail.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Status => "status",
            ErrorKind::PolicyFailed => "policy-failed",
            ErrorKind::PolicyMissing => "policy-missing",
            ErrorKind::OriginConnectTimeout => "origin-connect-timeout",
            ErrorKind::OriginTimeout => "origin-timeout",
            ErrorKind::OriginRefused => "origin-refused",
            ErrorKind::OriginUnreachable => "origin-unreachable",
            ErrorKind::OriginClosed => "origin-closed",
            ErrorKind::OriginError => "origin-error",
            ErrorKind::ClientGone => "client-gone",
            ErrorKind::BadRequest => "bad-request",
            ErrorKind::RequestTooLarge => "request-too-large",
            ErrorKind::InternalError => "internal-error",
        }
    }

    /// What happened, in words for an error page that leaks no internals.
    pub fn explain(self) -> &'static str {
        match self {
            ErrorKind::OriginConnectTimeout => "the origin did not accept the connection in time",
            ErrorKind::OriginTimeout => "the origin did not answer in time",
            ErrorKind::OriginRefused => "the origin refused the connection",
            ErrorKind::OriginUnreachable => "the origin is unreachable",
            ErrorKind::OriginClosed => "the origin closed the connection",
            ErrorKind::OriginError => "the origin failed",
            ErrorKind::BadRequest => "the request could not be read",
            ErrorKind::RequestTooLarge => "the request body is too large",
            ErrorKind::PolicyFailed => "the site's cache policy failed",
            ErrorKind::PolicyMissing => "the site's policy module is not loaded",
            ErrorKind::Status | ErrorKind::ClientGone | ErrorKind::InternalError => {
                "the request failed"
            }
        }
    }

    /// An error of this kind that answers `code`, for failures this proxy
    /// raises itself (pingora carries it as a custom code).
    pub fn error(self, code: u16, why: &'static str) -> Box<Error> {
        Error::explain(ErrorType::CustomCode(self.as_str(), code), why)
    }

    /// The status to answer for `e`, and its kind. Status 0 means the client
    /// is gone: answer nothing.
    pub fn classify(e: &Error) -> (u16, ErrorKind) {
        match (e.etype(), e.esource()) {
            (ErrorType::HTTPStatus(code), _) => (*code, ErrorKind::Status),
            (ErrorType::CustomCode(kind, code), _) => (
                *code,
                ErrorKind::ALL
                    .into_iter()
                    .find(|k| k.as_str() == *kind)
                    .unwrap_or(ErrorKind::InternalError),
            ),
            (
                ErrorType::ConnectTimedout | ErrorType::TLSHandshakeTimedout,
                ErrorSource::Upstream,
            ) => (504, ErrorKind::OriginConnectTimeout),
            (ErrorType::ReadTimedout | ErrorType::WriteTimedout, ErrorSource::Upstream) => {
                (504, ErrorKind::OriginTimeout)
            }
            (ErrorType::ConnectRefused, ErrorSource::Upstream) => (502, ErrorKind::OriginRefused),
            (ErrorType::ConnectNoRoute, ErrorSource::Upstream) => {
                (502, ErrorKind::OriginUnreachable)
            }
            (ErrorType::ConnectionClosed, ErrorSource::Upstream) => (502, ErrorKind::OriginClosed),
            (_, ErrorSource::Upstream) => (502, ErrorKind::OriginError),
            (
                ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
                ErrorSource::Downstream,
            ) => (0, ErrorKind::ClientGone),
            (_, ErrorSource::Downstream) => (400, ErrorKind::BadRequest),
            _ => (500, ErrorKind::InternalError),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_codes_round_trip_through_classify() {
        for kind in ErrorKind::ALL {
            assert_eq!(ErrorKind::classify(&kind.error(503, "test")), (503, kind));
        }
    }
}
