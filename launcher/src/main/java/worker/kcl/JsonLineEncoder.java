package worker.kcl;

import java.nio.charset.StandardCharsets;
import java.time.Instant;
import java.util.Locale;
import java.util.Map;

import ch.qos.logback.classic.spi.ILoggingEvent;
import ch.qos.logback.classic.spi.IThrowableProxy;
import ch.qos.logback.classic.spi.ThrowableProxyUtil;
import ch.qos.logback.core.encoder.EncoderBase;

/**
 * One JSON object per log event, in the shape the Python side writes (the JSON formatter in
 * {@code worker/log.py}): {@code {"message": ..., "level": "info", "timestamp": "...Z", "logger": ...}}
 * plus the MDC entries (KCL puts the shard id there) and {@code exception} when there is one.
 *
 * <p>The key names are bean properties, set in {@code worker-kcl-logback.xml}: renaming a key is a
 * one-line change there.
 */
public final class JsonLineEncoder extends EncoderBase<ILoggingEvent> {

    private String messageKey = "message";
    private String levelKey = "level";
    private String timestampKey = "timestamp";
    private String loggerKey = "logger";
    private String threadKey = "thread";
    private String exceptionKey = "exception";

    public void setMessageKey(String key) { this.messageKey = key; }
    public void setLevelKey(String key) { this.levelKey = key; }
    public void setTimestampKey(String key) { this.timestampKey = key; }
    public void setLoggerKey(String key) { this.loggerKey = key; }
    public void setThreadKey(String key) { this.threadKey = key; }
    public void setExceptionKey(String key) { this.exceptionKey = key; }

    @Override
    public byte[] headerBytes() {
        return null;
    }

    @Override
    public byte[] footerBytes() {
        return null;
    }

    @Override
    public byte[] encode(ILoggingEvent event) {
        StringBuilder out = new StringBuilder(256);
        out.append('{');
        field(out, messageKey, event.getFormattedMessage(), true);
        field(out, levelKey, event.getLevel().toString().toLowerCase(Locale.ROOT), false);
        field(out, timestampKey, Instant.ofEpochMilli(event.getTimeStamp()).toString(), false);
        field(out, loggerKey, event.getLoggerName(), false);
        field(out, threadKey, event.getThreadName(), false);
        Map<String, String> mdc = event.getMDCPropertyMap();
        if (mdc != null) {
            for (Map.Entry<String, String> e : mdc.entrySet()) {
                field(out, e.getKey(), e.getValue(), false);
            }
        }
        IThrowableProxy thrown = event.getThrowableProxy();
        if (thrown != null) {
            field(out, exceptionKey, ThrowableProxyUtil.asString(thrown), false);
        }
        out.append("}\n");
        return out.toString().getBytes(StandardCharsets.UTF_8);
    }

    private static void field(StringBuilder out, String key, String value, boolean first) {
        if (key == null || key.isEmpty()) {
            return; // an empty key name drops the field
        }
        if (!first) {
            out.append(',');
        }
        quote(out, key);
        out.append(':');
        if (value == null) {
            out.append("null");
        } else {
            quote(out, value);
        }
    }

    static void quote(StringBuilder out, String s) {
        out.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"': out.append("\\\""); break;
                case '\\': out.append("\\\\"); break;
                case '\n': out.append("\\n"); break;
                case '\r': out.append("\\r"); break;
                case '\t': out.append("\\t"); break;
                default:
                    if (c < 0x20) {
                        out.append(String.format("\\u%04x", (int) c));
                    } else {
                        out.append(c);
                    }
            }
        }
        out.append('"');
    }
}
