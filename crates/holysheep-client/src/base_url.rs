//! Joining request paths onto the configured base URL.

use http::Uri;
use http::uri::{Authority, PathAndQuery, Scheme};

use crate::Error;

/// A validated base URL: `http` or `https`, a host, an optional path prefix, nothing else.
#[derive(Debug, Clone)]
pub(crate) struct BaseUrl {
    uri: Uri,
    scheme: Scheme,
    authority: Authority,
    /// The base path without its trailing slash: `"/v1"`, or `""` for a bare origin.
    prefix: String,
}

impl BaseUrl {
    /// Parses and validates a base URL. Error messages never echo the URL, since a
    /// mistyped one could carry credentials.
    pub(crate) fn parse(raw: &str) -> Result<Self, Error> {
        let uri: Uri = raw
            .trim()
            .parse()
            .map_err(|e| Error::config_with("base URL is not a valid URI", e))?;
        let scheme = match uri.scheme() {
            Some(scheme) if *scheme == Scheme::HTTP || *scheme == Scheme::HTTPS => scheme.clone(),
            Some(_) => return Err(Error::config("base URL scheme must be http or https")),
            None => {
                return Err(Error::config(
                    "base URL needs a scheme and a host, like https://api.holysheep.ai/v1",
                ));
            }
        };
        let authority = match uri.authority() {
            Some(authority) if !authority.host().is_empty() => authority.clone(),
            _ => return Err(Error::config("base URL has no host")),
        };
        if authority.as_str().contains('@') {
            return Err(Error::config(
                "base URL must not contain user info; configure the API key instead",
            ));
        }
        if uri.query().is_some() {
            return Err(Error::config("base URL must not have a query"));
        }
        let prefix = uri.path().trim_end_matches('/').to_owned();
        Ok(Self {
            uri,
            scheme,
            authority,
            prefix,
        })
    }

    pub(crate) fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The upstream URI for a request: base path + request path (one slash between them) +
    /// request query. The request's own scheme and authority are ignored.
    pub(crate) fn join(&self, request: &Uri) -> Result<Uri, Error> {
        let path = request.path().trim_start_matches('/');
        let query = request.query();
        let mut joined =
            String::with_capacity(self.prefix.len() + path.len() + query.map_or(0, str::len) + 2);
        joined.push_str(&self.prefix);
        joined.push('/');
        joined.push_str(path);
        if let Some(query) = query {
            joined.push('?');
            joined.push_str(query);
        }
        let path_and_query = PathAndQuery::try_from(joined).map_err(Error::request)?;
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(Error::request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(base: &str, request: &str) -> String {
        let base = BaseUrl::parse(base).expect("valid base URL");
        let request: Uri = request.parse().expect("valid request URI");
        base.join(&request).expect("joinable").to_string()
    }

    #[test]
    fn request_path_is_appended_to_the_base_path() {
        let expected = "https://api.holysheep.ai/v1/chat/completions";
        assert_eq!(
            join("https://api.holysheep.ai/v1", "/chat/completions"),
            expected
        );
        assert_eq!(
            join("https://api.holysheep.ai/v1/", "/chat/completions"),
            expected
        );
        assert_eq!(
            join("https://api.holysheep.ai/v1//", "//chat/completions"),
            expected
        );
        assert_eq!(
            join(
                "https://api.holysheep.ai/v1",
                "http://gateway.local/chat/completions"
            ),
            expected
        );
    }

    #[test]
    fn bare_origins_and_queries() {
        assert_eq!(
            join("http://127.0.0.1:8080", "/v1/models?limit=2"),
            "http://127.0.0.1:8080/v1/models?limit=2"
        );
        assert_eq!(
            join("http://127.0.0.1:8080/", "/"),
            "http://127.0.0.1:8080/"
        );
        assert_eq!(
            join("http://[::1]:9000/api", "/x"),
            "http://[::1]:9000/api/x"
        );
    }

    #[test]
    fn bad_base_urls_are_config_errors() {
        for bad in [
            "api.holysheep.ai/v1",
            "/v1",
            "",
            "ftp://api.holysheep.ai/v1",
            "https://user:secret@api.holysheep.ai/v1",
            "https://api.holysheep.ai/v1?key=secret",
            "not a url",
        ] {
            let error = BaseUrl::parse(bad).expect_err(bad);
            assert!(error.is_config(), "{bad}: {error}");
            assert!(!error.to_string().contains("secret"), "{error}");
        }
    }
}
