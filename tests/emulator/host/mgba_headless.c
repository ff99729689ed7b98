/* mgba_headless.c: runs a Game Boy / GBA ROM in libmgba (0.10) with no window, audio or frame limit, and
 * loads Lua scripts through mGBA's own Lua engine, as its Tools > Scripting window does: the same
 * stdlib (emu, callbacks, console, C), the same `socket` API, the "frame" callback at the end of each
 * frame. Compiled by the tests with the system C compiler (tests/emulator/mgba_host.py).
 *
 * usage: mgba_headless ROM LOG FRAMES PEEK_ADDR PEEK_LEN SCRIPT...
 * LOG gets one JSON object a line: {"frame","keys","peek"} after each frame (keys = the keys the frame
 * ran with, as the scripts set them before it; peek = PEEK_LEN bytes of the bus from PEEK_ADDR after
 * it), {"log"} for console:log/warn/error,
 * {"buffer","text"} when a console:createBuffer() text changed, {"end"} at exit.
 * Lua globals steer the host (ours, unknown to mGBA): HOST_EXIT (true: stop), HOST_PAUSED (true: run
 * no frames, trigger the "host_paused" callback every millisecond instead) and HOST_FPS (a number read
 * once the scripts are loaded: at most this many frames a second; unset: as fast as possible). */
#include <mgba/core/core.h>
#include <mgba/core/scripting.h>
#include <mgba/gb/core.h>
#include <mgba/gba/core.h>
#include <mgba/script/context.h>
#include <mgba-util/vfs.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static FILE* out;
static unsigned frame;

static void json_string(const char* s) {
	fputc('"', out);
	for (; *s; ++s) {
		unsigned char c = (unsigned char) *s;
		if (c == '"' || c == '\\') fprintf(out, "\\%c", c);
		else if (c < 0x20) fprintf(out, "\\u%04x", c);
		else fputc(c, out);
	}
	fputc('"', out);
}

/* console:log / warn / error */
static void script_log(struct mLogger* logger, int category, enum mLogLevel level, const char* format, va_list args) {
	(void) logger; (void) category;
	char msg[4096];
	vsnprintf(msg, sizeof(msg), format, args);
	fprintf(out, "{\"frame\":%u,\"level\":\"%s\",\"log\":", frame,
		level == mLOG_ERROR ? "error" : level == mLOG_WARN ? "warn" : "info");
	json_string(msg);
	fputs("}\n", out);
}

/* The emulator's own messages: warnings and errors to stderr, the rest dropped. */
static void core_log(struct mLogger* logger, int category, enum mLogLevel level, const char* format, va_list args) {
	(void) logger;
	if (level & (mLOG_WARN | mLOG_ERROR | mLOG_FATAL)) {
		fprintf(stderr, "mgba %s: ", mLogCategoryName(category));
		vfprintf(stderr, format, args);
		fputc('\n', stderr);
	}
}

/* console:createBuffer(): the text is written to LOG whenever it changes (mGBA shows it in a tab). */
struct TextBuffer { struct mScriptTextBuffer d; char name[64]; char text[4096]; };
static void tb_init(struct mScriptTextBuffer* b, const char* name) {
	struct TextBuffer* t = (struct TextBuffer*) b;
	snprintf(t->name, sizeof(t->name), "%s", name ? name : "");
	t->text[0] = 0;
}
static void tb_deinit(struct mScriptTextBuffer* b) { free(b); }
static void tb_set_name(struct mScriptTextBuffer* b, const char* name) { tb_init(b, name); }
static uint32_t tb_zero(const struct mScriptTextBuffer* b) { (void) b; return 0; }
static uint32_t tb_cols(const struct mScriptTextBuffer* b) { (void) b; return 80; }
static void tb_emit(struct TextBuffer* t) {
	fprintf(out, "{\"frame\":%u,\"buffer\":", frame);
	json_string(t->name);
	fputs(",\"text\":", out);
	json_string(t->text);
	fputs("}\n", out);
}
static void tb_print(struct mScriptTextBuffer* b, const char* text) {
	struct TextBuffer* t = (struct TextBuffer*) b;
	strncat(t->text, text, sizeof(t->text) - strlen(t->text) - 1);
	tb_emit(t);
}
static void tb_clear(struct mScriptTextBuffer* b) { ((struct TextBuffer*) b)->text[0] = 0; }
static void tb_size(struct mScriptTextBuffer* b, uint32_t c, uint32_t r) { (void) b; (void) c; (void) r; }
static void tb_advance(struct mScriptTextBuffer* b, int32_t n) { (void) b; (void) n; }
static struct mScriptTextBuffer* make_buffer(void* context) {
	(void) context;
	struct TextBuffer* t = calloc(1, sizeof(*t));
	t->d = (struct mScriptTextBuffer) { tb_init, tb_deinit, tb_set_name, tb_zero, tb_zero, tb_cols, tb_cols,
		tb_print, tb_clear, tb_size, tb_size, tb_advance };
	return &t->d;
}

static void on_frame(void* context) { mScriptContextTriggerCallback(context, "frame"); }

static double lua_number(struct mScriptEngineContext* lua, const char* name) {
	struct mScriptValue* v = lua->getGlobal(lua, name);
	double x = !v ? 0 : v->type == mSCRIPT_TYPE_MS_S64 ? (double) v->value.s64
		: v->type == mSCRIPT_TYPE_MS_F64 ? v->value.f64 : 0;
	if (v) mScriptValueDeref(v);
	return x;
}

static double now(void) {
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static bool lua_flag(struct mScriptEngineContext* lua, const char* name) {
	struct mScriptValue* v = lua->getGlobal(lua, name);
	bool set = v && v->type == mSCRIPT_TYPE_MS_BOOL && v->value.u32;
	if (v) mScriptValueDeref(v);
	return set;
}

int main(int argc, char** argv) {
	if (argc < 7) {
		fprintf(stderr, "usage: %s ROM LOG FRAMES PEEK_ADDR PEEK_LEN SCRIPT...\n", argv[0]);
		return 2;
	}
	out = fopen(argv[2], "w");
	if (!out) { perror(argv[2]); return 2; }
	setvbuf(out, NULL, _IOLBF, 0);
	unsigned max_frames = strtoul(argv[3], NULL, 0), peek = strtoul(argv[4], NULL, 0);
	unsigned peek_len = strtoul(argv[5], NULL, 0);
	struct mLogger quiet = { .log = core_log }, console = { .log = script_log };
	mLogSetDefaultLogger(&quiet);

	/* No mCoreFind: it wants a licensed logo in the header, and our test ROM carries none. */
	size_t n = strlen(argv[1]);
	bool gba = n > 4 && strcmp(argv[1] + n - 4, ".gba") == 0;
	struct mCore* core = gba ? GBACoreCreate() : GBCoreCreate();
	struct VFile* rom = VFileOpen(argv[1], O_RDONLY);
	if (!core || !rom || !core->init(core)) { fprintf(stderr, "cannot open ROM %s\n", argv[1]); return 2; }
	mCoreInitConfig(core, NULL);
	unsigned width, height;
	core->desiredVideoDimensions(core, &width, &height);
	color_t* video = calloc(width * height, sizeof(color_t));
	core->setVideoBuffer(core, video, width);
	if (!core->loadROM(core, rom)) { fprintf(stderr, "not a ROM: %s\n", argv[1]); return 2; }
	core->reset(core);

	struct mScriptContext context;
	mScriptContextInit(&context);
	mScriptContextAttachStdlib(&context);
	mScriptContextAttachSocket(&context);
	mScriptContextRegisterEngines(&context);
	mScriptContextAttachLogger(&context, &console);
	mScriptContextSetTextBufferFactory(&context, make_buffer, NULL);
	mScriptContextAttachCore(&context, core);
	struct mCoreCallbacks callbacks = { .videoFrameEnded = on_frame, .context = &context };
	core->addCoreCallbacks(core, &callbacks);
	struct mScriptEngineContext* lua = HashTableLookup(&context.engines, "lua");
	if (!lua) { fprintf(stderr, "libmgba was built without Lua\n"); return 2; }

	const char* error = NULL;
	for (int i = 6; i < argc && !error; ++i) {
		struct VFile* vf = VFileOpen(argv[i], O_RDONLY);
		if (!vf) { fprintf(stderr, "cannot open script %s\n", argv[i]); return 2; }
		if (!lua->load(lua, argv[i], vf) || !lua->run(lua)) error = lua->getError(lua);
		vf->close(vf);
	}
	const char* reason = error ? "error" : "frames";
	double fps = lua_number(lua, "HOST_FPS"), next = now();
	while (!error && frame < max_frames) {
		if (lua_flag(lua, "HOST_EXIT")) { reason = "exit"; break; }
		if (lua_flag(lua, "HOST_PAUSED")) {
			mScriptContextTriggerCallback(&context, "host_paused");
			usleep(1000);
			continue;
		}
		if (fps > 0) { /* pace the frames like a frame limiter (mGBA's GUI: 60 a second) */
			next += 1 / fps;
			double wait = next - now();
			if (wait > 0) usleep((useconds_t) (wait * 1e6));
			else next = now();
		}
		unsigned keys = core->getKeys(core); /* what the scripts set for this frame */
		core->runFrame(core);
		fprintf(out, "{\"frame\":%u,\"keys\":%u,\"peek\":[", frame, keys);
		for (unsigned i = 0; i < peek_len; ++i) fprintf(out, "%s%u", i ? "," : "", core->busRead8(core, peek + i));
		fputs("]}\n", out);
		++frame;
	}
	fprintf(out, "{\"end\":\"%s\",\"frames\":%u,\"error\":", reason, frame);
	json_string(error ? error : "");
	fputs("}\n", out);
	fclose(out);
	return error ? 1 : 0;
}
