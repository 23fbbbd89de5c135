package worker.opensearch;

import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CountDownLatch;

import org.opensearch.analysis.common.CommonAnalysisPlugin;
import org.opensearch.common.settings.Settings;
import org.opensearch.core.common.transport.TransportAddress;
import org.opensearch.env.Environment;
import org.opensearch.http.HttpServerTransport;
import org.opensearch.index.mapper.MapperExtrasPlugin;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.plugins.Plugin;
import org.opensearch.transport.Netty4Plugin;

/**
 * A single-node OpenSearch cluster with its HTTP layer, in this JVM, on loopback.
 *
 * <p>Usage: {@code EmbeddedNode HOME_DIR [PORT_FILE]}. The node keeps its data under
 * {@code HOME_DIR/data}, binds HTTP and transport to 127.0.0.1 on ports the OS picks, and,
 * once started, prints {@code http://127.0.0.1:PORT} as one line on stdout and writes the
 * same line to {@code PORT_FILE} (atomically) when given. Everything else goes to stderr.
 *
 * <p>Lifetime: the node stops when stdin reaches end of file (the parent closed the pipe
 * or died) or on SIGTERM/SIGINT. It is started without OpenSearch's Bootstrap (no
 * root check, no system-call filter, no bootstrap checks): a test fixture, never a server.
 */
public final class EmbeddedNode extends Node {

    private EmbeddedNode(Environment environment, List<Class<? extends Plugin>> plugins) {
        super(environment, plugins, true);
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 1 || args.length > 2) {
            System.err.println("usage: EmbeddedNode HOME_DIR [PORT_FILE]");
            System.exit(2);
        }
        Path home = Path.of(args[0]).toAbsolutePath();
        Files.createDirectories(home.resolve("data"));
        Files.createDirectories(home.resolve("logs"));
        Settings settings = Settings.builder()
            .put("cluster.name", "worker-embedded")
            .put("node.name", "embedded-0")
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("discovery.type", "single-node")
            .put("network.host", "127.0.0.1")
            .put("http.port", "0")
            .put("transport.port", "0")
            // A test engine on a shared disk: never go read-only because the disk looks full.
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .put("action.auto_create_index", true)
            .build();
        Environment environment = InternalSettingsPreparer.prepareEnvironment(
            settings, Collections.emptyMap(), home.resolve("config"), () -> "embedded-0");
        Node node = new EmbeddedNode(
            environment,
            List.of(Netty4Plugin.class, CommonAnalysisPlugin.class, MapperExtrasPlugin.class));
        CountDownLatch stopped = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> close(node, stopped), "embedded-node-shutdown"));
        node.start();

        TransportAddress bound = node.injector().getInstance(HttpServerTransport.class).boundAddress().publishAddress();
        String url = "http://127.0.0.1:" + bound.getPort();
        if (args.length == 2) {
            Path target = Path.of(args[1]);
            Path tmp = target.resolveSibling(target.getFileName() + ".tmp");
            Files.writeString(tmp, url + "\n", StandardCharsets.UTF_8);
            Files.move(tmp, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        }
        System.out.println(url);
        System.out.flush();

        // Stop when the parent goes away: stdin EOF (or an error reading it).
        InputStream in = System.in;
        byte[] buf = new byte[256];
        try {
            while (in.read(buf) >= 0) {
                // input is ignored
            }
        } catch (IOException ignored) {
            // the pipe broke: same as EOF
        }
        System.exit(0); // runs the shutdown hook
    }

    private static void close(Node node, CountDownLatch stopped) {
        try {
            node.close();
        } catch (IOException | RuntimeException e) {
            System.err.println("embedded node: error while closing: " + e);
        } finally {
            stopped.countDown();
        }
    }
}
