//! A client host of its own: a network namespace joined to this one by a veth pair
//! (10.x.y.1 here, 10.x.y.2 there, a default route back), made and removed by the test
//! (`ip` from iproute2; `nft` from Debian's nftables, inside the namespace only), so
//! blocking UDP or moving the client's address is real.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

pub struct NetNs {
    pub name: String,
    /// This side's address on the link (where the node listens).
    pub host_ip: Ipv4Addr,
    /// The client's address in the namespace.
    pub client_ip: Ipv4Addr,
    host_if: String,
    pub client_if: String,
    dir: PathBuf,
}

fn ip(args: &[&str]) {
    run("ip", args);
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetNs {
    pub fn create() -> NetNs {
        let id: u32 = rand::random::<u32>() & 0x00ff_ffff;
        let name = format!("sc{id:06x}");
        let (a, b) = (100 + (id % 100) as u8, ((id >> 8) % 250) as u8 + 1);
        let host_ip = Ipv4Addr::new(10, a, b, 1);
        let client_ip = Ipv4Addr::new(10, a, b, 2);
        let host_if = format!("sch{id:06x}");
        let client_if = format!("scc{id:06x}");
        let dir = std::env::temp_dir().join(format!("sc-netns-{id:06x}"));
        std::fs::create_dir_all(&dir).unwrap();
        let ns = NetNs {
            name: name.clone(),
            host_ip,
            client_ip,
            host_if: host_if.clone(),
            client_if: client_if.clone(),
            dir,
        };
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &client_if,
        ]);
        ip(&["link", "set", &client_if, "netns", &name]);
        ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &host_if]);
        ip(&["link", "set", &host_if, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{client_ip}/24"),
            "dev",
            &client_if,
        ]);
        ip(&["-n", &name, "link", "set", &client_if, "up"]);
        ip(&[
            "-n",
            &name,
            "route",
            "add",
            "default",
            "via",
            &host_ip.to_string(),
        ]);
        // Moving the client's address deletes the old one; the new one must survive it.
        ns.exec(&["sysctl", "-qw", "net.ipv4.conf.all.promote_secondaries=1"]);
        ns
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        ip(&all);
    }

    /// Adds `rules` to an nftables output chain inside the namespace (made on first use).
    fn filter_out(&self, rules: &[String]) {
        let nft = crate::common::ensure_debian_command("nft", "nftables");
        self.exec(&[&nft, "add table inet streamcore_test"]);
        self.exec(&[
            &nft,
            "add chain inet streamcore_test out { type filter hook output priority 0 ; policy accept ; }",
        ]);
        for r in rules {
            self.exec(&[&nft, &format!("add rule inet streamcore_test out {r}")]);
        }
    }

    /// Drops every UDP packet the client sends (nftables, inside the namespace).
    pub fn block_udp(&self) {
        self.filter_out(&["meta l4proto udp drop".into()]);
    }

    /// Drops every packet the client sends to `host` but TCP to `ports` (a firewall
    /// that leaves HTTPS and TURN/TLS open, and nothing else).
    pub fn allow_only_tcp_to(&self, host: Ipv4Addr, ports: &[u16]) {
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        self.filter_out(&[
            format!(
                "ip daddr {host} tcp dport {{ {} }} accept",
                ports.join(", ")
            ),
            format!("ip daddr {host} drop"),
            "meta l4proto udp drop".into(),
        ]);
    }

    /// A script that runs Chromium inside the namespace (Playwright's executable).
    pub fn chromium(&self, chromium: &str) -> String {
        let path = self.dir.join("chromium-in-netns");
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\nexec ip netns exec {} {chromium} \"$@\"\n",
                self.name
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.display().to_string()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Removing the namespace removes its end of the pair, and with it ours.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
