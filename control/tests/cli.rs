//! The sluiced command line: `check` accepts good configs and refuses broken ones with file,
//! line and field; running without a config is a usage error.

use std::path::Path;
use std::process::Command;

fn sluiced(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluiced")).args(args).output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_shipped_pipeline_passes_check() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let (code, out, err) = sluiced(&["check", p.to_str().unwrap()]);
            assert_eq!(code, 0, "{}: {err}", p.display());
            assert!(out.contains(": ok ("), "{out}");
            n += 1;
        }
    }
    assert!(n >= 2, "pipelines/ should hold at least two configs");
}

#[test]
fn check_refuses_a_broken_config_with_file_line_and_field() {
    let dir = std::env::temp_dir().join(format!("sluice-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("broken.yaml");
    std::fs::write(
        &file,
        "ports:\n  - name: ext\n    device: net_null0\n    address: 198.18.0.1/24\nservices:\n  - name: web\n    vip: 198.18.10.1\n    port: 80\n    protocol: tcp\n    backends:\n      - address: 198.18.0.10\n        weight: 1001\n      - address: 198.18.0.300\n",
    )
    .unwrap();
    let (code, out, err) = sluiced(&["check", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    let f = file.display();
    assert_eq!(
        err,
        format!(
            "{f}:12:9: services[0].backends[0].weight: 1001 is outside 0..=1000\n\
             {f}:13:9: services[0].backends[1].address: \"198.18.0.300\" is not an IPv4 or IPv6 address\n"
        )
    );
    // Running it is refused the same way, before DPDK starts.
    let (code, _, err2) = sluiced(&["--config", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err2.ends_with(&err), "{err2}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn missing_file_and_missing_config() {
    let (code, _, err) = sluiced(&["check", "/nonexistent/pipeline.yaml"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("/nonexistent/pipeline.yaml: cannot read:"), "{err}");
    let (code, _, err) = sluiced(&[]);
    assert_eq!(code, 2);
    assert!(err.contains("--config"), "{err}");
}

#[cfg(feature = "dpdk")]
#[test]
fn a_second_sluiced_on_the_same_file_prefix_names_the_first() {
    let dir = std::env::temp_dir().join(format!("sluice-cli-dup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("null.yaml");
    let prefix = format!("sluice-cli-dup-{}", std::process::id());
    std::fs::write(
        &config,
        format!(
            "dpdk:\n  args: [--no-huge, -m, \"256\", --no-pci, --file-prefix, {prefix}]\n  vdevs: [net_null0]\n\
             workers: {{ cores: [1], control_core: 0 }}\n\
             ports:\n  - {{ name: ext, device: net_null0, address: 198.18.0.1/24 }}\n\
             sessions: {{ capacity: 1024 }}\n"
        ),
    )
    .unwrap();
    let log = dir.join("first.log");
    let sock = |n: &str| dir.join(n).to_str().unwrap().to_string();
    let mut first = Command::new(env!("CARGO_BIN_EXE_sluiced"))
        .args(["--config", config.to_str().unwrap(), "--admin-socket", &sock("1.sock")])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.join("first.err")).unwrap())
        .spawn()
        .unwrap();
    let running = (0..300).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let out = std::fs::read_to_string(&log).unwrap_or_default()
            + &std::fs::read_to_string(dir.join("first.err")).unwrap_or_default();
        out.contains("running:")
    });
    let second =
        running.then(|| sluiced(&["--config", config.to_str().unwrap(), "--admin-socket", &sock("2.sock")]));
    let _ = first.kill();
    let _ = first.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}")); // DPDK leaves it
    let (code, _, err) = second.expect("the first sluiced did not start");
    assert_ne!(code, 0, "{err}");
    assert!(err.contains(&format!("is in use by process {}", first.id())), "{err}");
}

/// Built without DPDK, sluiced checks the file it is asked to run, then says why it does not.
#[cfg(not(feature = "dpdk"))]
#[test]
fn without_dpdk_a_run_is_refused_plainly() {
    let good = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pipelines/lab.yaml");
    let (code, out, err) = sluiced(&["--config", good.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(out.is_empty(), "{out}");
    assert_eq!(err, "sluiced: this sluiced was built without DPDK; only check and which are available\n");
}

/// `sluicectl`, `sluiced check` and `sluiced which` install where DPDK is not: without the
/// `dpdk` feature nothing in sluice-control's dependency tree is DPDK. (Building it that way:
/// scripts/nodpdk-check.sh.)
#[test]
fn without_the_dpdk_feature_nothing_links_dpdk() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let out = Command::new(cargo)
        .args(["tree", "--offline", "-p", "sluice-control", "--no-default-features", "-e", "normal"])
        .args(["--prefix", "none", "--manifest-path", manifest.to_str().unwrap()])
        .output()
        .unwrap();
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "cargo tree: {}", String::from_utf8_lossy(&out.stderr));
    assert!(tree.starts_with("sluice-control "), "{tree}");
    assert!(tree.lines().any(|l| l.starts_with("sluice-dataplane ")), "{tree}");
    for crate_name in ["dpdk-sys ", "sluice-host-sys "] {
        assert!(!tree.lines().any(|l| l.starts_with(crate_name)), "{crate_name}in:\n{tree}");
    }
}

/// `sluiced upgrade-check`: says whether a restart on a config keeps the connections in its
/// session region, from what the region holds (made here as a running sluiced makes it).
#[test]
fn upgrade_check_reads_the_region_a_restart_would_attach_to() {
    use sluice_control::config::Config;
    use sluice_control::ids::Registry;
    use sluice_dataplane::region::{Header, Region, LAYOUT_VERSION};
    use sluice_dataplane::session::SessionTable;
    use std::os::unix::fs::FileExt;

    let dir = std::env::temp_dir().join(format!("sluice-cli-upgrade-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let region = dir.join("sessions");
    let config = |region_line: &str, backends: &[&str]| {
        let file = dir.join("pipeline.yaml");
        let bs: String = backends.iter().map(|b| format!("      - {{ address: {b} }}\n")).collect();
        std::fs::write(
            &file,
            format!(
                "ports:\n  - {{ name: ext, device: net_null0, address: 198.18.0.1/24 }}\n\
                 sessions:\n  capacity: 1024\n{region_line}\
                 services:\n  - name: web\n    vip: 198.18.10.1\n    port: 80\n    protocol: tcp\n    backends:\n{bs}"
            ),
        )
        .unwrap();
        file
    };
    let with_region = format!("  region: {{ path: {} }}\n", region.display());
    let run = |file: &Path| sluiced(&["upgrade-check", file.to_str().unwrap()]);

    let (code, out, err) = run(&config("", &["198.18.0.11"]));
    assert_eq!(code, 1, "{err}");
    assert!(out.contains("names no session region (`sessions.region`)"), "{out}");

    let file = config(&with_region, &["198.18.0.11"]);
    let (code, out, _) = run(&file);
    assert_eq!(code, 1);
    assert!(out.contains("none yet"), "{out}");

    // The region a sluiced running with backends .11 and .12 left.
    let running = Config::load(&config(&with_region, &["198.18.0.11", "198.18.0.12"])).unwrap();
    let header = Header {
        layout: LAYOUT_VERSION,
        slots: SessionTable::slots_for(running.session_capacity) as u64,
        capacity: running.session_capacity as u64,
        seeds: [1, 2, 3],
        epoch_ns: 1,
    };
    let (r, _) = Region::open(&region, header, true).unwrap();
    let mut ids = Registry::default();
    ids.assign(&mut running.snapshot_spec(1, None)).unwrap();
    r.store_ids(&ids.to_ids()).unwrap();
    drop(r);

    // The new config drops .12.
    let file = config(&with_region, &["198.18.0.11"]);
    let (code, out, _) = run(&file);
    assert_eq!(code, 0, "{out}");
    let f = file.display();
    assert!(out.contains("this binary attaches to it; a restart keeps its connections"), "{out}");
    assert!(
        out.contains(&format!("{f} names 1 of the region's 1 services and 1 of its 2 backends")),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "not in {f}: backend 198.18.0.12 of service tcp 198.18.10.1:80 (its sessions follow the service's on_backend_removed)"
        )),
        "{out}"
    );
    assert!(out.contains("to upgrade: install the new binary, then restart sluiced"), "{out}");

    // A region another layout left.
    let f = std::fs::OpenOptions::new().write(true).open(&region).unwrap();
    f.write_all_at(&999u32.to_le_bytes(), 8).unwrap();
    let (code, out, _) = run(&file);
    assert_eq!(code, 1);
    assert!(out.contains("layout version 999, this binary's is"), "{out}");
    assert!(out.contains("a restart starts with no sessions and breaks every connection"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
