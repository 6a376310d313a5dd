// Speculative-decoding glue kernels (tiny, single workgroup).
//
// accept: greedy sample-and-match of one verify round (twin: reference.spec.accept_greedy).
//   Bindings: 0 params P, 1 ids (u32, read_write): target argmax of the n+1 verify rows at
//   p.tgt_off, drafts d1..dn at p.draft_off (the verify batch is [id_last, d1..dn]); the number of
//   valid drafts at ids[p.nvalid_off] (the draft p-min gate may stop early); end-of-generation ids
//   at p.eog_off (p.n_eog of them); writes result at p.res_off: [k, n_out, out_0 .. out_{n_out-1}]
//   and the next round's id_last at ids[p.next_off]. Token budget: max_emit from the step
//   record word 3 (0 = no limit). A target id flagged NONFINITE_ID (its logits had no finite
//   winner) ends the round like an end-of-generation id: the host then stops with an error.
//   Dispatch: 1 workgroup of 1 thread.
// draft_gate: ids[out_off] = number of leading drafts whose top-candidate probability
//   (softmax over the top 10, from the top-k kernel; draft i's at p_top[p_off + i*p_stride]) is
//   >= p_min: llama.cpp's --spec-draft-p-min.
//   Bindings: 0 params G, 1 ids (u32), 2 p_top (f32 [n]). Dispatch: 1 workgroup of 1 thread.
// rerun_record: the segment record of a long round's rerun (models/qwen35/program.py,
//   slot_long_round): k = ids[res_off] (the round's accepted drafts) lies in sub-batch c = k / sub;
//   ids[rec_off .. +8] = the 8-word template at tmpl_off with n_tok = k - c*sub + 1 (the kept rows
//   of that sub-batch), word 2 = ids[table_off + c] (the plane c starts from, and where the final
//   state goes), row0 = c*sub. Bindings: 0 params Q, 1 ids (u32). Dispatch: 1 workgroup of 1 thread.
// Dispatched by wgmtp/kernels/spec.py accept, draft_gate and rerun_record (the entry of the same
//   name); twins reference.spec.accept_greedy, reference.spec.draft_gate, reference.spec.rerun_record.
struct P { n: u32, tgt_off: u32, draft_off: u32, nvalid_off: u32, eog_off: u32, n_eog: u32,
           res_off: u32, next_off: u32, step_off: u32 };

@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> ids: array<u32>;

const NONFINITE_ID: u32 = 0x80000000u;

// An end-of-generation id, or a flagged one (the round ends at either).
fn is_eog(t: u32) -> bool {
    if ((t & NONFINITE_ID) != 0u) { return true; }
    for (var j = 0u; j < p.n_eog; j++) {
        if (ids[p.eog_off + j] == t) { return true; }
    }
    return false;
}

@compute @workgroup_size(1)
fn accept() {
    let n_valid = min(ids[p.nvalid_off], p.n);
    let max_emit = ids[p.step_off + 3u];
    var n_out = 0u;
    var stop = false;
    for (var i = 0u; i < n_valid; i++) {
        let t = ids[p.tgt_off + i];
        ids[p.res_off + 2u + n_out] = t;
        n_out++;
        if (t != ids[p.draft_off + i] || is_eog(t) || (max_emit > 0u && n_out >= max_emit)) {
            stop = true;
            break;
        }
    }
    if (!stop) {
        ids[p.res_off + 2u + n_out] = ids[p.tgt_off + n_valid];
        n_out++;
    }
    ids[p.res_off] = n_out - 1u;
    ids[p.res_off + 1u] = n_out;
    ids[p.next_off] = ids[p.res_off + 2u + n_out - 1u];
}

struct G { n: u32, out_off: u32, p_off: u32, p_min: f32, p_stride: u32 };
@group(0) @binding(0) var<uniform> g: G;
@group(0) @binding(2) var<storage, read_write> p_top: array<f32>;

@compute @workgroup_size(1)
fn draft_gate() {
    var n = 0u;
    for (var i = 0u; i < g.n; i++) {
        if (p_top[g.p_off + i * g.p_stride] < g.p_min) { break; }
        n++;
    }
    ids[g.out_off] = n;
}

struct Q { res_off: u32, tmpl_off: u32, table_off: u32, rec_off: u32, sub: u32 };
@group(0) @binding(0) var<uniform> q: Q;

@compute @workgroup_size(1)
fn rerun_record() {
    let k = ids[q.res_off];
    let c = k / q.sub;
    for (var i = 0u; i < 8u; i++) { ids[q.rec_off + i] = ids[q.tmpl_off + i]; }
    ids[q.rec_off] = k - c * q.sub + 1u;
    ids[q.rec_off + 2u] = ids[q.table_off + c];
    ids[q.rec_off + 5u] = c * q.sub;
}
