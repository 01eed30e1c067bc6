#!/usr/bin/env bash
# The Debian package as it would be installed: builds it (scripts/package.sh), unpacks it
# (dpkg-deb -x) and checks, from the unpacked tree:
#   - its Depends name the packages of the DPDK libraries sluiced links and of DPDK's mempool
#     driver;
#   - every pipeline in pipelines/ is shipped, and the package's own sluiced checks each;
#   - the package's sluiced, run on a net_null port with a socket standing for systemd's
#     NOTIFY_SOCKET (scripts/package-ready.py), sends READY=1 once its worker runs and its admin
#     socket answers, applies its file on `sluicectl apply` (the unit's reload) and refuses a
#     broken one, and sends STOPPING=1 on SIGTERM;
#   - every file of control/monitoring/, if there is one, is shipped under /usr/share/sluice;
#   - systemd-analyze verify accepts its units, with the unpacked tree as root (their ExecStart
#     and ExecReload binaries where the units name them, the host's systemd units and BIRD
#     beside them) and its man pages for their Documentation=;
#   - every man page renders (man -l) with its command's NAME, and the pages it refers to (a
#     command's subcommands') are shipped;
#   - bash, zsh and fish completions for each command, the bash one registering itself.
# Each failure says which check and exits 1.
#   scripts/package-check.sh          build the package, then check it
#   scripts/package-check.sh DEB      check DEB as it is
set -euo pipefail
cd "$(dirname "$0")/.."

fail() {
    echo "package-check: $*" >&2
    exit 1
}

missing=()
for tool in man:man-db systemd-analyze:systemd dpkg-deb:dpkg readelf:binutils; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool#*:}")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "== apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ $# -ge 1 ]]; then
    deb=$1
else
    deb=$(scripts/package.sh | tail -n 1)
fi
[[ -f $deb ]] || fail "no package $deb"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root="$work/root"
dpkg-deb -x "$deb" "$root"
commands=(sluiced sluicectl sluice-agent)

echo "== $deb: Depends"
depends=$(dpkg-deb -f "$deb" Depends)
for c in "${commands[@]}"; do
    [[ -x $root/usr/bin/$c ]] || fail "no executable usr/bin/$c"
done
# The packages of the DPDK libraries sluiced links, and of the mempool driver EAL loads.
needed=(librte-mempool-ring23)
for lib in $(readelf -d "$root/usr/bin/sluiced" | sed -n 's/.*(NEEDED).*\[\(librte_.*\)\]/\1/p'); do
    needed+=("$(dpkg -S "*/$lib" | head -n 1 | cut -d: -f1)")
done
[[ ${#needed[@]} -gt 1 ]] || fail "the package's sluiced links no DPDK library"
for p in "${needed[@]}"; do
    grep -qE "(^|, )$p( |,|$)" <<<"$depends" || fail "Depends does not name $p: $depends"
done

echo "== the package's sluiced checks the shipped pipelines"
examples="$root/usr/share/doc/sluice/examples/pipelines"
for p in pipelines/*.yaml; do
    shipped="$examples/$(basename "$p")"
    [[ -f $shipped ]] || fail "$p is not shipped (no ${shipped#"$root"})"
    "$root/usr/bin/sluiced" check "$shipped" || fail "sluiced check ${shipped#"$root"} failed"
done

echo "== the package's sluiced under a stand-in for systemd (READY=1, reload, STOPPING=1)"
python3 scripts/package-ready.py "$root" "$work" || fail "sluiced's systemd protocol (above)"

if [[ -d control/monitoring ]]; then
    echo "== the monitoring files"
    while IFS= read -r f; do
        [[ -f $root/usr/share/sluice/monitoring/${f#control/monitoring/} ]] || fail "$f is not shipped"
    done < <(find control/monitoring -type f)
fi

echo "== systemd-analyze verify"
units=()
for u in "$root"/usr/lib/systemd/system/*.service; do
    units+=("$(basename "$u")")
done
[[ ${#units[@]} -eq 3 ]] || fail "expected 3 units, found: ${units[*]}"
# The root a system with the package installed has: the package's files, the host's units
# (the targets the package's units name) and the host's BIRD (bird2, which sluice-bird runs).
cp -r --no-clobber /usr/lib/systemd/system/. "$root/usr/lib/systemd/system/"
mkdir -p "$root/usr/sbin"
for b in bird birdc; do
    [[ -x /usr/sbin/$b ]] || fail "/usr/sbin/$b missing: install bird2 (scripts/setup.sh does)"
    cp /usr/sbin/$b "$root/usr/sbin/"
done
if ! out=$(cd "$work" && MANPATH="$root/usr/share/man:/usr/share/man" \
    systemd-analyze verify --root="$root" "${units[@]}" 2>&1) || [[ -n $out ]]; then
    fail "systemd-analyze verify ${units[*]}:"$'\n'"$out"
fi

echo "== man pages"
for c in "${commands[@]}"; do
    [[ -f $root/usr/share/man/man1/$c.1.gz ]] || fail "no man page for $c"
done
for page in "$root"/usr/share/man/man1/*.1.gz; do
    name=$(basename "$page" .1.gz)
    text=$(MANPAGER=cat MANWIDTH=100 man -l "$page" 2>"$work/man.err") || fail "man -l $name: $(cat "$work/man.err")"
    [[ ! -s $work/man.err ]] || fail "man -l $name complained: $(cat "$work/man.err")"
    grep -q '^NAME$' <<<"$text" || fail "man -l $name: no NAME section"
    grep -qE "^ +$name +- " <<<"$text" || fail "man -l $name: NAME does not name $name"
    # The pages it refers to (a command's to its subcommands') are shipped too.
    for ref in $(grep -oE '\bsluice[a-z-]*\(1\)' <<<"$text" | sort -u); do
        [[ -f $root/usr/share/man/man1/${ref%(1)}.1.gz ]] || fail "man -l $name refers to $ref, not shipped"
    done
done

echo "== completions"
for c in "${commands[@]}"; do
    for f in "bash-completion/completions/$c" "zsh/vendor-completions/_$c" "fish/vendor_completions.d/$c.fish"; do
        [[ -s $root/usr/share/$f ]] || fail "no completion usr/share/$f"
    done
    bash -c 'source "$1" && complete -p "$2"' _ "$root/usr/share/bash-completion/completions/$c" "$c" >/dev/null ||
        fail "the bash completion of $c registers no completion for it"
done
echo "package-check: ok ($deb: ${#units[@]} units, $(ls "$examples" | wc -l) pipelines checked)"
