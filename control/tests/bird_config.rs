//! The BIRD configuration sluiced writes from `routing.bgp` is one BIRD 2 itself accepts
//! (`bird -p` parses a configuration and exits); scripts/setup.sh installs bird2.

use sluice_control::bird_config::{render, Bgp, Community, Neighbor};
use std::process::Command;
use std::time::Duration;

#[test]
fn bird_parses_what_sluiced_writes() {
    let dir = std::env::temp_dir().join(format!("sluice-bird-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let include = dir.join("vips.conf");
    std::fs::write(&include, "route 198.18.10.1/32 blackhole;\nroute 198.18.10.2/32 blackhole;\n").unwrap();
    let include6 = sluice_control::bird::ipv6_include(&include);
    std::fs::write(&include6, "route 2001:db8:10::1/128 blackhole;\n").unwrap();
    let bgp = Bgp {
        local_as: 4_200_000_001,
        router_id: "198.18.0.1".parse().unwrap(),
        neighbors: vec![
            Neighbor { address: "198.18.0.254".parse().unwrap(), remote_as: 65000, bfd: true },
            Neighbor { address: "198.18.2.254".parse().unwrap(), remote_as: 65002, bfd: false },
            Neighbor { address: "2001:db8:18::fe".parse().unwrap(), remote_as: 65000, bfd: true },
        ],
        bfd_interval: Duration::from_millis(300),
        bfd_multiplier: 3,
        communities: vec![Community::Standard(65001, 100), Community::Large(4_200_000_001, 7, 9)],
    };
    let conf = dir.join("bird.conf");
    std::fs::write(&conf, render(&bgp, &include)).unwrap();
    let out = Command::new("bird")
        .args(["-p", "-c"])
        .arg(&conf)
        .output()
        .expect("BIRD 2 (`bird`, Debian's bird2; scripts/setup.sh installs it)");
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    // A configuration BIRD refuses is refused by line: break one to see that it would.
    std::fs::write(&conf, render(&bgp, &include).replace("local as", "local ass")).unwrap();
    let broken = Command::new("bird").args(["-p", "-c"]).arg(&conf).output().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(out.status.success(), "BIRD refused sluiced's configuration: {said}");
    assert!(!broken.status.success(), "bird -p checks what it reads");
}
