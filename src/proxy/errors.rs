//! Which status a client gets when proxying fails.

use pingora::{Error, ErrorSource, ErrorType};

/// The status for a failed request; 0 means the client is gone and gets nothing.
pub fn status_for(e: &Error) -> u16 {
    use ErrorType::*;
    match (e.etype(), e.esource()) {
        (HTTPStatus(code), _) => *code,
        (ConnectTimedout | ReadTimedout | WriteTimedout, ErrorSource::Upstream) => 504,
        (_, ErrorSource::Upstream) => 502,
        (ReadError | WriteError | ConnectionClosed, ErrorSource::Downstream) => 0,
        (ReadTimedout | WriteTimedout, ErrorSource::Downstream) => 408,
        (_, ErrorSource::Downstream) => 400,
        (_, ErrorSource::Internal | ErrorSource::Unset) => match e.etype() {
            ConnectTimedout => 504,
            ConnectRefused | ConnectNoRoute | ConnectError => 502,
            _ => 500,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_failures_to_statuses() {
        let cases = [
            (Error::new_up(ErrorType::ConnectRefused), 502),
            (Error::new_up(ErrorType::ConnectTimedout), 504),
            (Error::new_up(ErrorType::ReadTimedout), 504),
            (Error::new_up(ErrorType::ConnectionClosed), 502),
            (Error::new_up(ErrorType::InvalidHTTPHeader), 502),
            (Error::new_down(ErrorType::ConnectionClosed), 0),
            (Error::new_down(ErrorType::InvalidHTTPHeader), 400),
            (Error::new_down(ErrorType::ReadTimedout), 408),
            (Error::new_in(ErrorType::HTTPStatus(413)), 413),
            (Error::new_in(ErrorType::InternalError), 500),
        ];
        for (e, want) in cases {
            assert_eq!(status_for(&e), want, "{e}");
        }
    }
}
