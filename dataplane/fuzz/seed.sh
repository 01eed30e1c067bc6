#!/usr/bin/env bash
# Writes the seed corpora from the golden cases (dataplane/tests/golden/cases.txt):
#   corpus/pipeline/golden-NN-*  port byte + input frame (golden port 3, the tagged one, is
#                                port 2 in the fuzz snapshot; see dataplane/src/testkit/golden.rs)
#   corpus/wire/golden-NN-*      the input frame alone
#   corpus/worker/golden-*       a few multi-frame inputs in the worker target's record format
# Plain bash, no xxd/python. Idempotent: rewrites the golden-* files and leaves others alone.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cases=${1:-$here/../tests/golden/cases.txt}
[[ -r $cases ]] || { echo "seed.sh: no golden cases at $cases" >&2; exit 1; }
mkdir -p "$here/corpus/pipeline" "$here/corpus/wire" "$here/corpus/worker"
rm -f "$here"/corpus/{pipeline,wire,worker}/golden-*

# hex string -> bytes on stdout
unhex() {
    local h=$1 esc="" i
    for ((i = 0; i < ${#h}; i += 2)); do esc+="\\x${h:i:2}"; done
    printf '%b' "$esc"
}

# worker record: sel (port, no clock step, no poll), 16-bit big-endian length, frame
record() { # port hex
    local port=$1 h=$2 n=$((${#2} / 2))
    printf '%02x%04x%s' "$port" "$n" "$h"
}

n=0 name="" port="" all="" arp="" icmp="" tunnel="" drops=""
while IFS= read -r line; do
    case $line in
        "case: "*) name=${line#case: } ;;
        "port: "*) port=${line#port: } ;;
        "in: "*)
            h=${line#in: }
            [[ $port == 3 ]] && port=2
            n=$((n + 1))
            slug=$(printf '%s' "$name" | tr 'A-Z' 'a-z' | tr -c 'a-z0-9' '-' | tr -s '-' | cut -c1-40)
            slug=${slug%-}
            f=$(printf 'golden-%02d-%s' "$n" "$slug")
            unhex "$(printf '%02x' "$port")$h" >"$here/corpus/pipeline/$f"
            unhex "$h" >"$here/corpus/wire/$f"
            r=$(record "$port" "$h")
            all+=$r
            case $name in
                arp*|*arp*) arp+=$r ;;
                *ping*|icmp*) icmp+=$r ;;
            esac
            ;;
        "verdict: "*)
            case ${line#verdict: } in
                tunnel:*) tunnel+=${r} ;;
                drop:*) drops+=${r} ;;
            esac
            ;;
    esac
done <"$cases"

# The unresolved backend 198.19.0.99 answers ARP on port 1, then traffic to its service flows.
learn="020000000101020000000163080600010800060400020200000001 63c6130063020000000101c6130001"
learn=${learn// /}
syn_unres=$(awk '/^case: backend whose MAC is unknown/{f=1} f && /^in: /{print substr($0, 5); exit}' "$cases")
unhex "01$learn" >"$here/corpus/pipeline/golden-learn-arp-reply"
# Two frames the golden cases lack (checksums precomputed): a SYN to 198.18.10.5:80, which is
# tunnelled in GRE (key 7) out of the tagged, small-MTU port; and an echo request with id 0,
# sequence 0 and no data (the all-zero ICMP body of README.md's "Findings").
syn5="020000000001020000000099080045000028000140004006a4a3c6120002c6120a05"
syn5+="9c4000500000000100000000500220005d250000"
ping0="02000000000102000000009908004500001c000140004001a4b8c6120002c6120a010800f7ff00000000"
unhex "00$syn5" >"$here/corpus/pipeline/golden-syn-tagged-gre-egress"
unhex "00$ping0" >"$here/corpus/pipeline/golden-ping-all-zero-body"
unhex "$syn5" >"$here/corpus/wire/golden-syn-tagged-gre-egress"

# Two IPv6 frames for the fuzz appliance's [2001:db8:10::1]:443/tcp (IPv6 in GRE key 7 out of
# the tagged, 556-byte-tunnel port), checksums precomputed: a SYN (MSS 1440, clamped to 496),
# and a 600-byte segment (540 bytes of data 00 01 02 ...), too big for the tunnel.
syn6="02000000000102000000009986dd62812345001c063d20010db800180000000000000000009920010db8"
syn6+="0010000000000000000000019c4001bb000003e8000000007002fd2088fc0000020405a004020000"
big6="02000000000102000000009986dd600000000230063d20010db800180000000000000000009920010db8"
big6+="0010000000000000000000019c4301bb0000000900000009501820005c280000"
for ((i = 0; i < 540; i++)); do big6+=$(printf '%02x' $((i % 256))); done
unhex "00$syn6" >"$here/corpus/pipeline/golden-ipv6-syn-tagged-gre-egress"
unhex "00$big6" >"$here/corpus/pipeline/golden-ipv6-too-big-tagged"
unhex "$syn6" >"$here/corpus/wire/golden-ipv6-syn-tagged-gre-egress"

# setup byte: 00 = worker 0, unlimited TX; 13 = worker 1, TX limit 1, republish halfway.
unhex "00$all" >"$here/corpus/worker/golden-all"
unhex "00$arp" >"$here/corpus/worker/golden-arp"
unhex "00$icmp" >"$here/corpus/worker/golden-icmp"
unhex "00$tunnel" >"$here/corpus/worker/golden-tunnel"
unhex "13$tunnel$drops" >"$here/corpus/worker/golden-tx-limit-republish"
unhex "00$(record 0 "$syn6")$(record 0 "$big6")" >"$here/corpus/worker/golden-ipv6-tagged"
unhex "00$(record 0 "$syn_unres")$(record 1 "$learn")$(printf '%02x' $((0x80 | 4)))$(printf '%04x' $((${#syn_unres} / 2)))$syn_unres" \
    >"$here/corpus/worker/golden-learn-then-forward"

echo "seed.sh: $n golden cases -> $(ls "$here/corpus/pipeline" | wc -l) pipeline, $(ls "$here/corpus/wire" | wc -l) wire, $(ls "$here/corpus/worker" | wc -l) worker seeds"
