//! HTTPS on the node's listener, so a phone on the LAN can use its camera and
//! microphone without a proxy (browsers allow them only on secure origins).
//!
//! Two sources of a certificate (`[tls]`):
//! - files (`cert` + `key`, PEM): a real certificate, reloaded at each start;
//! - `self_signed`: a local CA (made once, kept in `data_dir/tls/ca.pem`, ten years,
//!   name-constrained to private addresses and local names plus this node's own, so a
//!   phone that installs it trusts it for nothing else) and a server certificate it
//!   signs for the addresses clients use — the
//!   advertised IPs, the listen IP, the public URL's host, `localhost` and
//!   `127.0.0.1` — remade when that list changes or within 30 days of its end
//!   (397 days, the most Apple's devices accept). A phone trusts the node by
//!   installing `ca.pem` (see the README), or once by accepting the warning after
//!   comparing the fingerprint the log prints.
//!
//! Serving: [`crate::http_listener`] puts rustls (aws-lc-rs, as str0m's DTLS) in front
//! of the same router as plain HTTP, with the same connection limits.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{info, warn};

use crate::config::Settings;

/// A server certificate, ready to serve.
pub struct Tls {
    pub config: Arc<rustls::ServerConfig>,
    /// SHA-256 of the server certificate, `AB:CD:…`.
    pub fingerprint: String,
    /// With `self_signed`: the CA certificate to install on phones, and its fingerprint.
    pub ca: Option<(PathBuf, String)>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("fingerprint", &self.fingerprint)
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

/// The server certificate's lifetime: Apple's devices refuse longer ones.
const LEAF_DAYS: i64 = 397;
/// A server certificate this close to its end is remade at start.
const RENEW_BEFORE_DAYS: i64 = 30;

/// The certificate the settings ask for, or `None` for plain HTTP.
pub fn load(settings: &Settings) -> anyhow::Result<Option<Tls>> {
    let t = &settings.tls;
    let (chain, key, ca) = if t.self_signed {
        let dir = settings.data_dir.join("tls");
        let names = names(settings);
        let (chain, key, ca_path, ca_der) = self_signed(&dir, &names)
            .with_context(|| format!("making the self-signed certificate in {}", dir.display()))?;
        (chain, key, Some((ca_path, fingerprint(&ca_der))))
    } else if let (Some(cert), Some(key)) = (&t.cert, &t.key) {
        let chain = read_chain(cert)?;
        let key = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("reading the private key {}", key.display()))?;
        (chain, key, None)
    } else {
        return Ok(None);
    };
    let fp = fingerprint(&chain[0]);
    let mut config = server_config(chain, key)?;
    // WebSockets upgrade HTTP/1.1 connections.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Tls {
        config: Arc::new(config),
        fingerprint: fp,
        ca,
    }))
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> anyhow::Result<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the certificate and key do not fit together")
}

/// The certificate of the embedded TURN server's TLS listener: `turn.tls_cert` and
/// `turn.tls_key` when set (TURN often has a name of its own), else the node's.
pub fn turn_config(
    settings: &Settings,
    node: Option<&Tls>,
) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    let mut config = match (&settings.turn.tls_cert, &settings.turn.tls_key) {
        (Some(cert), Some(key)) => {
            let chain = read_chain(cert)?;
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("reading the private key {}", key.display()))?;
            server_config(chain, key)?
        }
        _ => match node {
            Some(t) => (*t.config).clone(),
            None => return Ok(None),
        },
    };
    // TURN clients ask for no HTTP protocol.
    config.alpn_protocols.clear();
    Ok(Some(Arc::new(config)))
}

fn read_chain(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let chain = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading the certificate {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing the certificate {}", path.display()))?;
    if chain.is_empty() {
        bail!("{} holds no certificate", path.display());
    }
    Ok(chain)
}

/// The names a self-signed certificate covers: every address a client may use.
pub fn names(settings: &Settings) -> Vec<String> {
    let mut ips: Vec<IpAddr> = settings.media.advertise.clone();
    if !settings.http.ip().is_unspecified() {
        ips.push(settings.http.ip());
    }
    ips.push(IpAddr::from([127, 0, 0, 1]));
    let mut names: Vec<String> = ips.iter().map(ToString::to_string).collect();
    if let Some(host) = settings
        .public_url
        .as_deref()
        .and_then(|u| u.split("://").nth(1))
        .and_then(|rest| rest.split('/').next())
        .map(|hostport| match hostport.rsplit_once(':') {
            Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => h,
            _ => hostport,
        })
    {
        names.push(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
        );
    }
    names.push("localhost".into());
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    names
}

/// The CA and server certificate in `dir`, made or remade as needed. Returns the
/// chain (server, CA), the server key, and where the CA is.
#[allow(clippy::type_complexity)] // one call site; a struct would only rename the tuple
fn self_signed(
    dir: &Path,
    names: &[String],
) -> anyhow::Result<(
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
    PathBuf,
    CertificateDer<'static>,
)> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    std::fs::create_dir_all(dir)?;
    let ca_path = dir.join("ca.pem");
    let ca_key_path = dir.join("ca-key.pem");
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    let names_path = dir.join("names");
    let permits_path = dir.join("ca-permits");
    let now = time::OffsetDateTime::now_utc();

    // The CA may only vouch for what it permits; a name outside (a new public address)
    // needs a new CA, which phones must trust again.
    let permits: Vec<String> = std::fs::read_to_string(&permits_path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect();
    let covered = names.iter().all(|n| permitted(&permits, n));
    if !(ca_path.exists() && ca_key_path.exists() && covered) {
        if ca_path.exists() {
            warn!(names = %names.join(", "), "the local CA does not cover these names; making a new one (phones must trust it again)");
        }
        let permits = ca_permits(names);
        let key = KeyPair::generate().context("making the CA key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(
            DnType::CommonName,
            format!(
                "StreamCore local CA {}",
                hex::encode(rand::random::<[u8; 4]>())
            ),
        );
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.name_constraints = Some(rcgen::NameConstraints {
            permitted_subtrees: permits.iter().filter_map(|p| subtree(p)).collect(),
            excluded_subtrees: Vec::new(),
        });
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(3650);
        let cert = params.self_signed(&key).context("signing the CA")?;
        write_secret(&ca_key_path, key.serialize_pem().as_bytes())?;
        std::fs::write(&ca_path, cert.pem())?;
        std::fs::write(&permits_path, permits.join("\n"))?;
        let _ = std::fs::remove_file(&cert_path);
        info!(ca = %ca_path.display(), "made a local certificate authority for HTTPS");
    }
    let ca_pem = std::fs::read_to_string(&ca_path)?;
    let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .with_context(|| format!("parsing {}", ca_path.display()))?;

    let wanted = names.join("\n");
    let current = std::fs::read_to_string(&names_path).unwrap_or_default();
    let fresh = cert_path.exists()
        && key_path.exists()
        && current == wanted
        && leaf_valid_until(&cert_path)
            .is_some_and(|end| end - now > time::Duration::days(RENEW_BEFORE_DAYS));
    if !fresh {
        let ca_key = KeyPair::from_pem(&std::fs::read_to_string(&ca_key_path)?)
            .context("reading the CA key")?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).context("reading the CA")?;
        let key = KeyPair::generate().context("making the server key")?;
        let mut params =
            CertificateParams::new(names.to_vec()).context("the certificate's names")?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("StreamCore {}", names[0]));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(LEAF_DAYS);
        let cert = params
            .signed_by(&key, &issuer)
            .context("signing the server certificate")?;
        write_secret(&key_path, key.serialize_pem().as_bytes())?;
        std::fs::write(&cert_path, cert.pem())?;
        std::fs::write(&names_path, &wanted)?;
        info!(names = %names.join(", "), "made an HTTPS certificate");
    }
    let mut chain = read_chain(&cert_path)?;
    chain.push(ca_der.clone().into_owned());
    let key = PrivateKeyDer::from_pem_file(&key_path).context("reading the server key")?;
    Ok((chain, key, ca_path, ca_der.into_owned()))
}

/// What the local CA permits, besides `names`: private and link-local addresses,
/// loopback, and names that only mean something on a LAN. As `ip:<cidr>` and
/// `dns:<name>` lines (kept in `ca-permits`).
const LOCAL_PERMITS: [&str; 15] = [
    "ip:127.0.0.0/8",
    "ip:10.0.0.0/8",
    "ip:172.16.0.0/12",
    "ip:192.168.0.0/16",
    "ip:100.64.0.0/10",
    "ip:169.254.0.0/16",
    "ip:::1/128",
    "ip:fc00::/7",
    "ip:fe80::/10",
    "dns:localhost",
    "dns:local",
    "dns:lan",
    "dns:home.arpa",
    "dns:internal",
    "dns:test",
];

/// The local permits plus whatever of `names` they do not cover.
fn ca_permits(names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = LOCAL_PERMITS.iter().map(|s| (*s).to_owned()).collect();
    for n in names {
        if !permitted(&out, n) {
            out.push(match n.parse::<IpAddr>() {
                Ok(ip) if ip.is_ipv4() => format!("ip:{ip}/32"),
                Ok(ip) => format!("ip:{ip}/128"),
                Err(_) => format!("dns:{n}"),
            });
        }
    }
    out
}

/// Whether a name is inside one of the permits (an address in a subnet, a DNS name
/// equal to or under a permitted name).
fn permitted(permits: &[String], name: &str) -> bool {
    let ip = name.parse::<IpAddr>().ok();
    let lower = name.to_ascii_lowercase();
    permits.iter().any(|p| {
        if let Some(cidr) = p.strip_prefix("ip:") {
            let (Some(ip), Some((net, bits))) = (ip, cidr.rsplit_once('/')) else {
                return false;
            };
            let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else {
                return false;
            };
            match (ip, net) {
                (IpAddr::V4(a), IpAddr::V4(n)) => {
                    let mask = u32::MAX.checked_shl(32 - bits.min(32)).unwrap_or(0);
                    u32::from(a) & mask == u32::from(n) & mask
                }
                (IpAddr::V6(a), IpAddr::V6(n)) => {
                    let mask = u128::MAX.checked_shl(128 - bits.min(128)).unwrap_or(0);
                    u128::from(a) & mask == u128::from(n) & mask
                }
                _ => false,
            }
        } else if let Some(dns) = p.strip_prefix("dns:") {
            let dns = dns.to_ascii_lowercase();
            ip.is_none() && (lower == dns || lower.ends_with(&format!(".{dns}")))
        } else {
            false
        }
    })
}

/// A permit as a name constraint of the CA certificate.
fn subtree(permit: &str) -> Option<rcgen::GeneralSubtree> {
    if let Some(cidr) = permit.strip_prefix("ip:") {
        return cidr
            .parse::<rcgen::CidrSubnet>()
            .ok()
            .map(rcgen::GeneralSubtree::IpAddress);
    }
    permit
        .strip_prefix("dns:")
        .map(|d| rcgen::GeneralSubtree::DnsName(d.to_owned()))
}

/// When the certificate in `path` ends.
fn leaf_valid_until(path: &Path) -> Option<time::OffsetDateTime> {
    let der = CertificateDer::from_pem_file(path).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(cert.validity().not_after.to_datetime())
}

/// Writes a private key readable by its owner only.
fn write_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // An existing file keeps its mode through `open`: set it.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

/// SHA-256 of a DER certificate as `AB:CD:…` (what browsers' certificate viewers show).
pub fn fingerprint(der: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
    d.as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// What the log and the console say about HTTPS at start.
pub fn announce(tls: &Tls, public_url: &str) {
    info!(fingerprint = %tls.fingerprint, "HTTPS on {public_url}");
    if let Some((ca, fp)) = &tls.ca {
        info!(
            ca = %ca.display(),
            ca_fingerprint = %fp,
            "self-signed HTTPS: install the CA on phones (README: \"HTTPS for a phone on your network\"), or accept the browser's warning after checking the fingerprint"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_names_every_address_clients_use() {
        let mut s = Settings {
            http: "0.0.0.0:8443".parse().unwrap(),
            ..Settings::default()
        };
        s.media.advertise = vec!["192.168.1.20".parse().unwrap()];
        s.public_url = Some("https://phone-gw.lan:8443/".into());
        assert_eq!(
            names(&s),
            ["192.168.1.20", "127.0.0.1", "phone-gw.lan", "localhost"]
        );
    }

    #[test]
    fn the_local_ca_permits_lan_addresses_and_this_nodes_names_only() {
        let names = vec![
            "192.168.1.20".to_owned(),
            "203.0.113.7".to_owned(),
            "studio.example.com".to_owned(),
            "phone.test".to_owned(),
        ];
        let permits = ca_permits(&names);
        for n in &names {
            assert!(permitted(&permits, n), "{n}");
        }
        assert!(permits.contains(&"ip:203.0.113.7/32".to_owned()));
        assert!(permits.contains(&"dns:studio.example.com".to_owned()));
        assert!(
            !permits.contains(&"dns:phone.test".to_owned()),
            "under .test already"
        );
        for other in ["8.8.8.8", "www.bank.example", "example.com", "2001:db8::1"] {
            assert!(!permitted(&permits, other), "{other}");
        }
        for local in [
            "10.1.2.3",
            "172.20.0.1",
            "fd00::5",
            "::1",
            "my-pc.local",
            "LOCALHOST",
        ] {
            assert!(permitted(&permits, local), "{local}");
        }
        assert!(permits.iter().all(|p| subtree(p).is_some()));
    }

    #[test]
    fn a_self_signed_certificate_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("sc-tls-{}", rand::random::<u64>()));
        let names = vec!["127.0.0.1".to_owned(), "localhost".to_owned()];
        let (chain, _, ca, ca_der) = self_signed(&dir, &names).unwrap();
        assert_eq!(chain.len(), 2, "server certificate, then the CA");
        assert_eq!(chain[1], ca_der);
        let again = self_signed(&dir, &names).unwrap();
        assert_eq!(again.0[0], chain[0], "kept while the names are the same");
        let more = vec!["10.0.0.5".to_owned(), "localhost".to_owned()];
        let remade = self_signed(&dir, &more).unwrap();
        assert_ne!(remade.0[0], chain[0], "remade for new names");
        assert_eq!(
            remade.3, ca_der,
            "by the same CA: a LAN address is within it"
        );
        let public = vec!["203.0.113.9".to_owned()];
        let new_ca = self_signed(&dir, &public).unwrap();
        assert_ne!(
            new_ca.3, ca_der,
            "a public address needs a CA that permits it"
        );
        let (_, leaf) = x509_parser::parse_x509_certificate(&remade.0[0]).unwrap();
        let sans = leaf.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(sans.general_names.len(), 2);
        assert!(ca.exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.join("key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "the key is private");
        }
        assert_eq!(fingerprint(&chain[0]).len(), 32 * 3 - 1);
        let _ = std::fs::remove_dir_all(dir);
    }
}
