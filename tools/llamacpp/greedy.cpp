// Greedy decoding with libllama, for tools/bench_llamacpp.py: the same prompt token ids as wgmtp
// gets, and the generated ids with the top-1/top-2 logit margin of every step, as one JSON line.
// The model is loaded with its MTP block (load_mtp), so llama.cpp checks that block's tensors too.
// With TEXT, also llama.cpp's tokenization of TEXT (to compare with wgmtp's tokenizer).
//   wgmtp-greedy MODEL NGL REPACK N_PREDICT N_THREADS ID,ID,ID... [TEXT]
#include "llama.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

static void quiet_log(enum ggml_log_level level, const char * text, void *) {
    if (level == GGML_LOG_LEVEL_WARN || level == GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

int main(int argc, char ** argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: %s MODEL NGL REPACK N_PREDICT N_THREADS ID,ID,...\n", argv[0]);
        return 2;
    }
    const char * path = argv[1];
    const int ngl = atoi(argv[2]);
    const bool repack = atoi(argv[3]) != 0;
    const int n_predict = atoi(argv[4]);
    const int n_threads = atoi(argv[5]);
    std::vector<llama_token> prompt;
    for (char * s = strtok(argv[6], ","); s; s = strtok(nullptr, ",")) prompt.push_back(atoi(s));
    if (getenv("WGMTP_GREEDY_VERBOSE") == nullptr) llama_log_set(quiet_log, nullptr);

    llama_backend_init();
    llama_model_params mp = llama_model_default_params();
    mp.n_gpu_layers = ngl;
    mp.use_extra_bufts = repack;
    mp.load_mtp = getenv("WGMTP_GREEDY_NO_MTP") == nullptr;
    llama_model * model = llama_model_load_from_file(path, mp);
    if (!model) { fprintf(stderr, "wgmtp-greedy: failed to load %s\n", path); return 1; }
    const llama_vocab * vocab = llama_model_get_vocab(model);
    const int n_vocab = llama_vocab_n_tokens(vocab);

    llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 512;
    cp.n_batch = 512;
    cp.n_ubatch = 512;
    if (n_threads > 0) { cp.n_threads = n_threads; cp.n_threads_batch = n_threads; }
    llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "wgmtp-greedy: failed to create a context\n"); return 1; }

    std::vector<llama_token> out;
    std::vector<float> margins;
    llama_batch batch = llama_batch_get_one(prompt.data(), (int32_t) prompt.size());
    llama_token tok = 0;
    for (int i = 0; i < n_predict; i++) {
        if (llama_decode(ctx, batch) != 0) { fprintf(stderr, "wgmtp-greedy: llama_decode failed at step %d\n", i); return 1; }
        const float * logits = llama_get_logits_ith(ctx, -1);
        int best = 0, second = -1;
        for (int v = 1; v < n_vocab; v++) {
            if (logits[v] > logits[best]) { second = best; best = v; }
            else if (second < 0 || logits[v] > logits[second]) second = v;
        }
        out.push_back(best);
        margins.push_back(logits[best] - logits[second]);
        tok = best;
        batch = llama_batch_get_one(&tok, 1);
    }
    printf("{\"tokens\": [");
    for (size_t i = 0; i < out.size(); i++) printf("%s%d", i ? ", " : "", out[i]);
    printf("], \"margins\": [");
    for (size_t i = 0; i < margins.size(); i++) printf("%s%.6g", i ? ", " : "", margins[i]);
    printf("], \"n_vocab\": %d", n_vocab);
    if (argc > 7) {
        const std::string text = argv[7];
        std::vector<llama_token> ids(text.size() + 8);
        int n = llama_tokenize(vocab, text.c_str(), (int32_t) text.size(), ids.data(), (int32_t) ids.size(),
                               /*add_special*/ true, /*parse_special*/ true);
        printf(", \"text_ids\": [");
        for (int i = 0; i < n; i++) printf("%s%d", i ? ", " : "", ids[i]);
        printf("]");
    }
    printf("}\n");
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
