// The C example (examples/c/stream.c) in C++17, through a small RAII wrapper: the session is
// freed by its destructor, failures become exceptions that carry the status and message, and
// output buffers are std::vectors reused from result to result.
//
//   stream_cpp MODEL_DIR FRAMES_DIR AUDIO.wav [HFOV_DEG]
//
// Build: c++ -std=c++17 -I include examples/cpp/stream.cpp $(pkg-config --libs avseg)

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "avseg.h"

namespace avseg {

class Error : public std::runtime_error {
public:
    Error(avseg_status status, const std::string &call)
        : std::runtime_error(call + ": " + avseg_status_name(status) + ": " + avseg_last_error_message()),
          status_(status) {}
    avseg_status status() const { return status_; }

private:
    avseg_status status_;
};

inline void check(avseg_status st, const char *call) {
    if (st != AVSEG_OK) throw Error(st, call);
}

// Owns one avseg_session. Movable, not copyable: exactly one owner frees the handle.
class Session {
public:
    Session(const std::string &model_dir, const avseg_session_options &options) {
        check(avseg_session_new(model_dir.c_str(), &options, &handle_), "avseg_session_new");
    }
    ~Session() {
        if (handle_) avseg_session_free(handle_);
    }
    Session(const Session &) = delete;
    Session &operator=(const Session &) = delete;
    Session(Session &&other) noexcept : handle_(std::exchange(other.handle_, nullptr)) {}
    Session &operator=(Session &&other) noexcept {
        if (this != &other) {
            if (handle_) avseg_session_free(handle_);
            handle_ = std::exchange(other.handle_, nullptr);
        }
        return *this;
    }

    static avseg_session_options default_options() {
        avseg_session_options o{};
        check(avseg_session_options_default(&o), "avseg_session_options_default");
        return o;
    }

    void push_audio(const int16_t *interleaved, size_t count, uint32_t rate, uint32_t channels, double t) {
        check(avseg_session_push_audio_s16(handle_, interleaved, count, rate, channels, t), "avseg_session_push_audio_s16");
    }
    void push_frame(const std::vector<uint8_t> &rgb, uint32_t width, uint32_t height, double t) {
        check(avseg_session_push_frame_rgb8(handle_, rgb.data(), rgb.size(), width, height, 0, t), "avseg_session_push_frame_rgb8");
    }
    size_t process() {
        size_t n = 0;
        check(avseg_session_process(handle_, &n), "avseg_session_process");
        return n;
    }
    size_t finish() {
        size_t n = 0;
        check(avseg_session_finish(handle_, &n), "avseg_session_finish");
        return n;
    }
    std::optional<avseg_result_info> latest() const {
        avseg_result_info info{};
        avseg_status st = avseg_session_latest(handle_, &info);
        if (st == AVSEG_ERR_NO_RESULT) return std::nullopt;
        check(st, "avseg_session_latest");
        return info;
    }
    // Fills `out` with the latest mask, growing it only when needed.
    void mask(std::vector<uint8_t> &out) const {
        size_t needed = 0;
        avseg_status st = avseg_session_latest_mask(handle_, out.data(), out.size(), &needed);
        if (st == AVSEG_ERR_BUFFER_TOO_SMALL) {
            out.resize(needed);
            st = avseg_session_latest_mask(handle_, out.data(), out.size(), &needed);
        }
        check(st, "avseg_session_latest_mask");
        out.resize(needed);
    }
    void objects(float hfov_deg, std::vector<avseg_object> &out) const {
        size_t count = 0;
        out.resize(out.capacity());
        avseg_status st = avseg_session_latest_objects(handle_, hfov_deg, out.data(), out.size(), &count);
        if (st == AVSEG_ERR_BUFFER_TOO_SMALL) {
            out.resize(count);
            st = avseg_session_latest_objects(handle_, hfov_deg, out.data(), out.size(), &count);
        }
        check(st, "avseg_session_latest_objects");
        out.resize(count);
    }
    struct Result {
        avseg_result_info info;
        std::vector<uint8_t> mask;
        std::vector<avseg_object> objects;
    };
    // Takes the oldest result not yet taken into `r`, reusing its buffers; false when none waits.
    bool pop(float hfov_deg, Result &r) {
        for (;;) {
            avseg_status st = avseg_session_pop_result(handle_, hfov_deg, &r.info, r.mask.data(), r.mask.size(),
                                                       r.objects.data(), r.objects.size());
            if (st == AVSEG_ERR_NO_RESULT) return false;
            if (st == AVSEG_ERR_BUFFER_TOO_SMALL) {  // the result stays first in line
                r.mask.resize(std::max(r.mask.size(), size_t{r.info.width} * r.info.height));
                r.objects.resize(std::max(r.objects.size(), r.info.object_count));
                continue;
            }
            check(st, "avseg_session_pop_result");
            return true;
        }
    }
    avseg_stats stats() const {
        avseg_stats s{};
        check(avseg_session_stats(handle_, &s), "avseg_session_stats");
        return s;
    }

private:
    avseg_session *handle_ = nullptr;
};

}  // namespace avseg

namespace {

std::vector<uint8_t> read_file(const std::filesystem::path &p) {
    std::ifstream f(p, std::ios::binary);
    if (!f) throw std::runtime_error("cannot open " + p.string());
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

uint32_t le(const uint8_t *p, int bytes) {
    uint32_t v = 0;
    for (int i = bytes - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

struct Wav {
    std::vector<int16_t> samples;
    uint32_t rate = 0, channels = 0;
};

// 16-bit PCM only; walks the RIFF chunks.
Wav read_wav(const std::filesystem::path &p) {
    auto d = read_file(p);
    if (d.size() < 12 || std::string(d.begin(), d.begin() + 4) != "RIFF") throw std::runtime_error("not a WAV file");
    Wav w;
    uint32_t bits = 0;
    for (size_t pos = 12; pos + 8 <= d.size();) {
        std::string id(d.begin() + pos, d.begin() + pos + 4);
        size_t size = std::min<size_t>(le(&d[pos + 4], 4), d.size() - pos - 8), body = pos + 8;
        if (id == "fmt " && size >= 16) {
            w.channels = le(&d[body + 2], 2);
            w.rate = le(&d[body + 4], 4);
            bits = le(&d[body + 14], 2);
        } else if (id == "data") {
            for (size_t i = 0; i + 1 < size; i += 2) w.samples.push_back(static_cast<int16_t>(le(&d[body + i], 2)));
        }
        pos = body + size + (size & 1);
    }
    if (bits != 16 || w.channels == 0 || w.rate == 0) throw std::runtime_error("only 16-bit PCM WAV is supported");
    w.samples.resize(w.samples.size() / w.channels * w.channels);
    return w;
}

// Binary PPM (P6, maxval 255) → packed RGB8.
std::vector<uint8_t> read_ppm(const std::filesystem::path &p, uint32_t &width, uint32_t &height) {
    auto d = read_file(p);
    size_t pos = 2;
    uint32_t v[3] = {0, 0, 0};
    if (d.size() < 2 || d[0] != 'P' || d[1] != '6') throw std::runtime_error(p.string() + ": not a P6 PPM");
    for (auto &x : v) {
        for (;;) {
            while (pos < d.size() && std::isspace(d[pos])) pos++;
            if (pos < d.size() && d[pos] == '#') {
                while (pos < d.size() && d[pos] != '\n') pos++;
            } else {
                break;
            }
        }
        while (pos < d.size() && std::isdigit(d[pos]) && x < 100000) x = x * 10 + (d[pos++] - '0');
    }
    pos++;
    size_t need = size_t{v[0]} * v[1] * 3;
    if (v[2] != 255 || need == 0 || pos > d.size() || d.size() - pos < need) throw std::runtime_error(p.string() + ": bad PPM");
    width = v[0];
    height = v[1];
    return std::vector<uint8_t>(d.begin() + pos, d.begin() + pos + need);
}

// Natural order: frame_2 before frame_10.
bool natural_less(const std::string &a, const std::string &b) {
    size_t i = 0, j = 0;
    while (i < a.size() && j < b.size()) {
        if (std::isdigit(static_cast<unsigned char>(a[i])) && std::isdigit(static_cast<unsigned char>(b[j]))) {
            size_t ie = i, je = j;
            while (ie < a.size() && std::isdigit(static_cast<unsigned char>(a[ie]))) ie++;
            while (je < b.size() && std::isdigit(static_cast<unsigned char>(b[je]))) je++;
            unsigned long x = std::stoul(a.substr(i, ie - i)), y = std::stoul(b.substr(j, je - j));
            if (x != y) return x < y;
            i = ie;
            j = je;
        } else {
            if (a[i] != b[j]) return a[i] < b[j];
            i++;
            j++;
        }
    }
    return a.size() - i < b.size() - j;
}

size_t print_results(avseg::Session &s, float hfov, avseg::Session::Result &r) {
    size_t printed = 0;
    while (s.pop(hfov, r)) {
        const auto &info = r.info;
        const size_t pixels = size_t{info.width} * info.height;
        auto fg = std::count_if(r.mask.begin(), r.mask.begin() + static_cast<std::ptrdiff_t>(pixels),
                                [](uint8_t l) { return l != 0; });
        std::printf("result seq=%llu t=%.4f size=%ux%u fg=%.4f mask_fg=%ld objects=%zu latency_ms=%.1f\n",
                    static_cast<unsigned long long>(info.sequence), info.frame_timestamp, info.width, info.height,
                    info.foreground_fraction, static_cast<long>(fg), info.object_count, info.latency_ms);
        for (size_t i = 0; i < info.object_count; i++) {
            const auto &o = r.objects[i];
            std::printf("  object id=%u class=%u bbox=%u,%u,%u,%u area=%llu centroid=%.1f,%.1f conf=%.3f bearing=%.2f\n",
                        o.id, o.class_id, o.bbox_x, o.bbox_y, o.bbox_w, o.bbox_h,
                        static_cast<unsigned long long>(o.area), o.centroid_x, o.centroid_y, o.confidence,
                        o.bearing_deg);
        }
        printed++;
    }
    return printed;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 4 || argc > 5) {
        std::fprintf(stderr, "usage: %s MODEL_DIR FRAMES_DIR AUDIO.wav [HFOV_DEG]\n", argv[0]);
        return 2;
    }
    try {
        const float hfov = argc == 5 ? std::stof(argv[4]) : 60.0f;
        if (avseg_abi_version() != AVSEG_ABI_VERSION) throw std::runtime_error("avseg.h does not match the library");
        std::printf("avseg %s (ABI %u)\n", avseg_version(), avseg_abi_version());

        const Wav wav = read_wav(argv[3]);
        std::vector<std::filesystem::path> frames;
        for (const auto &e : std::filesystem::directory_iterator(argv[2]))
            if (e.path().extension() == ".ppm") frames.push_back(e.path());
        std::sort(frames.begin(), frames.end(),
                  [](const auto &a, const auto &b) { return natural_less(a.filename().string(), b.filename().string()); });
        if (frames.empty()) throw std::runtime_error("no .ppm frames in FRAMES_DIR");

        auto options = avseg::Session::default_options();
        options.threads = 2;
        avseg::Session session(argv[1], options);

        // Non-empty from the start: an empty vector's NULL data() would mean "part not wanted".
        avseg::Session::Result result{{}, std::vector<uint8_t>(1), std::vector<avseg_object>(1)};
        size_t audio_pos = 0, produced = 0;
        constexpr size_t chunk_frames = 2048;
        auto seconds_at = [&](size_t pos) { return static_cast<double>(pos / wav.channels) / wav.rate; };
        for (size_t i = 0; i <= frames.size(); i++) {
            const double t = i < frames.size() ? static_cast<double>(i) + 0.9375 : 1e300;
            while (audio_pos < wav.samples.size() && seconds_at(audio_pos) < t) {
                size_t n = std::min(chunk_frames * wav.channels, wav.samples.size() - audio_pos);
                session.push_audio(wav.samples.data() + audio_pos, n, wav.rate, wav.channels, seconds_at(audio_pos));
                audio_pos += n;
            }
            if (i < frames.size()) {
                uint32_t w = 0, h = 0;
                auto rgb = read_ppm(frames[i], w, h);
                session.push_frame(rgb, w, h, t);
            }
            if (session.process() > 0) produced += print_results(session, hfov, result);
        }
        if (session.finish() > 0) produced += print_results(session, hfov, result);
        const auto st = session.stats();
        std::printf("summary frames=%zu results=%zu windows=%llu frames_used=%llu frames_dropped=%llu overwritten=%llu\n", frames.size(),
                    produced, static_cast<unsigned long long>(st.windows), static_cast<unsigned long long>(st.frames_used),
                    static_cast<unsigned long long>(st.frames_dropped),
                    static_cast<unsigned long long>(st.results_overwritten));
    } catch (const std::exception &e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
    return 0;
}
