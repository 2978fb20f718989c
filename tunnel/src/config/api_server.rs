//! A Kubernetes API server's address, parsed once (by `http`'s URI parser) from
//! `[kubernetes] api_server` or made from the in-cluster environment.

use std::{fmt, net::IpAddr, str::FromStr};

use http::Uri;

/// `https://host[:port]`, 443 when no port is given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiServer {
    /// A name or an IP address, without the brackets of an IPv6 literal.
    pub host: String,
    pub port: u16,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{url:?}: {why}")]
pub struct ApiServerError {
    url: String,
    why: String,
}

impl FromStr for ApiServer {
    type Err = ApiServerError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let bad = |why: String| ApiServerError {
            url: url.into(),
            why,
        };
        let uri: Uri = url.parse().map_err(|e| bad(format!("not a URL ({e})")))?;
        if uri.scheme_str() != Some("https") {
            return Err(bad("the API server is reached over https:// only".into()));
        }
        if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
            return Err(bad(
                "a path is not accepted: give https://host[:port]".into()
            ));
        }
        let authority = uri.authority().ok_or_else(|| bad("names no host".into()))?;
        let rest = authority.as_str().strip_prefix(authority.host());
        // `http` takes a port it cannot read for none; say so instead of dialling 443.
        let port = match rest {
            None => return Err(bad("user information is not accepted".into())),
            Some("") => 443,
            Some(rest) => {
                let port = rest.strip_prefix(':').unwrap_or(rest);
                port.parse::<u16>()
                    .map_err(|_| bad(format!("{port:?} is not a port")))?
            }
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("names no host".into()));
        }
        Ok(Self {
            host: host.into(),
            port,
        })
    }
}

impl fmt::Display for ApiServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => write!(f, "[{}]:{}", self.host, self.port),
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(url: &str) -> (String, u16) {
        let server: ApiServer = url.parse().unwrap();
        (server.host, server.port)
    }

    #[test]
    fn api_server_urls() {
        assert_eq!(parsed("https://10.96.0.1:443"), ("10.96.0.1".into(), 443));
        assert_eq!(parsed("https://[fd00::1]:6443"), ("fd00::1".into(), 6443));
        assert_eq!(parsed("https://api.example"), ("api.example".into(), 443));
        assert_eq!(parsed("https://api.example/"), ("api.example".into(), 443));
        assert_eq!(
            "https://[fd00::1]:6443"
                .parse::<ApiServer>()
                .unwrap()
                .to_string(),
            "[fd00::1]:6443"
        );
        for (bad, why) in [
            ("http://10.96.0.1", "https:// only"),
            ("https://h:x", "not a port"),
            ("https://h:99999", "not a port"),
            ("https://user@h:6443", "user information"),
            ("https://h/api", "a path is not accepted"),
            ("10.96.0.1:443", "https:// only"),
            ("https://", "not a URL"),
        ] {
            let error = bad.parse::<ApiServer>().unwrap_err().to_string();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }
}
