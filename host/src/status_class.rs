//! A response status's class (RFC 9110 §15): the `class` label of
//! `stavka_responses_total` and the keys of the status rates in `/stats`.

/// The first digit of a status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusClass {
    /// 1xx: interim responses (RFC 9110 §15.2).
    Informational,
    /// 2xx (§15.3).
    Successful,
    /// 3xx (§15.4).
    Redirection,
    /// 4xx (§15.5).
    ClientError,
    /// 5xx (§15.6).
    ServerError,
}

impl StatusClass {
    /// Every class, in order.
    pub const ALL: [StatusClass; 5] = [
        StatusClass::Informational,
        StatusClass::Successful,
        StatusClass::Redirection,
        StatusClass::ClientError,
        StatusClass::ServerError,
    ];

    /// The class of `status`; `None` for a code outside 100–599 (a request
    /// answered with nothing has status 0).
    pub fn of(status: u16) -> Option<StatusClass> {
        match status {
            100..=199 => Some(StatusClass::Informational),
            200..=299 => Some(StatusClass::Successful),
            300..=399 => Some(StatusClass::Redirection),
            400..=499 => Some(StatusClass::ClientError),
            500..=599 => Some(StatusClass::ServerError),
            _ => None,
        }
    }

    /// Its position in [`StatusClass::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The label: `1xx` … `5xx`.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusClass::Informational => "1xx",
            StatusClass::Successful => "2xx",
            StatusClass::Redirection => "3xx",
            StatusClass::ClientError => "4xx",
            StatusClass::ServerError => "5xx",
        }
    }

    /// The class a label names.
    pub fn from_label(label: &str) -> Option<StatusClass> {
        StatusClass::ALL.into_iter().find(|c| c.as_str() == label)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_in_range_has_the_class_of_its_first_digit() {
        for code in 100..600u16 {
            let class = StatusClass::of(code).unwrap();
            assert_eq!(class.index(), usize::from(code / 100 - 1));
            assert_eq!(class.as_str().as_bytes()[0], b'0' + (code / 100) as u8);
            assert_eq!(StatusClass::from_label(class.as_str()), Some(class));
        }
        assert_eq!(StatusClass::of(0), None);
        assert_eq!(StatusClass::of(99), None);
        assert_eq!(StatusClass::of(600), None);
    }
}
