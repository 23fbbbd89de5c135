package worker.kcl;

import java.io.IOException;
import java.io.InputStream;
import java.io.Reader;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicBoolean;

import com.amazonaws.services.dynamodbv2.streamsadapter.AmazonDynamoDBStreamsAdapterClient;
import com.amazonaws.services.dynamodbv2.streamsadapter.StreamsSchedulerFactory;
import com.amazonaws.services.dynamodbv2.streamsadapter.polling.DynamoDBStreamsPollingConfig;
import com.amazonaws.services.dynamodbv2.streamsadapter.util.KinesisMapperUtil;
import org.slf4j.Logger;
import sun.misc.Signal;
import sun.misc.SignalHandler;
import org.slf4j.LoggerFactory;
import software.amazon.awssdk.auth.credentials.AwsCredentialsProvider;
import software.amazon.awssdk.core.client.config.ClientOverrideConfiguration;
import software.amazon.awssdk.core.internal.retry.SdkDefaultRetryStrategy;
import software.amazon.awssdk.regions.Region;
import software.amazon.awssdk.retries.StandardRetryStrategy;
import software.amazon.awssdk.retries.api.BackoffStrategy;
import software.amazon.awssdk.services.cloudwatch.CloudWatchAsyncClient;
import software.amazon.awssdk.services.dynamodb.DynamoDbAsyncClient;
import software.amazon.awssdk.services.dynamodb.streams.DynamoDbStreamsClient;
import software.amazon.kinesis.checkpoint.CheckpointConfig;
import software.amazon.kinesis.common.ConfigsBuilder;
import software.amazon.kinesis.common.InitialPositionInStream;
import software.amazon.kinesis.common.InitialPositionInStreamExtended;
import software.amazon.kinesis.coordinator.CoordinatorConfig;
import software.amazon.kinesis.coordinator.Scheduler;
import software.amazon.kinesis.leases.LeaseManagementConfig;
import software.amazon.kinesis.lifecycle.LifecycleConfig;
import software.amazon.kinesis.metrics.MetricsConfig;
import software.amazon.kinesis.metrics.MetricsLevel;
import software.amazon.kinesis.metrics.NullMetricsFactory;
import software.amazon.kinesis.multilang.MultiLangDaemonConfig;
import software.amazon.kinesis.multilang.MultiLangRecordProcessorFactory;
import software.amazon.kinesis.multilang.config.ConfigurationSettableUtils;
import software.amazon.kinesis.multilang.config.MultiLangDaemonConfiguration;
import software.amazon.kinesis.processor.ProcessorConfig;
import software.amazon.kinesis.processor.ShardRecordProcessorFactory;
import software.amazon.kinesis.processor.StreamTracker;
import software.amazon.kinesis.retrieval.RetrievalConfig;
import software.amazon.kinesis.retrieval.polling.PollingConfig;

/**
 * KCL 3 multilang daemon for a DynamoDB stream: KCL's own multilang configuration and child
 * process handling, with the scheduler built by the DynamoDB Streams Kinesis Adapter 2.x.
 *
 * <p>Usage: {@code java -cp 'lib/*' worker.kcl.StreamsMultiLangLauncher <file.properties>}.
 * The file is the standard multilang properties file, with {@code streamName} set to the
 * DynamoDB <em>stream ARN</em> (not {@code streamArn}: KCL validates that key as a Kinesis ARN).
 * Extra keys read here: {@code regionName}, {@code dynamoDBEndpoint},
 * {@code dynamoDBStreamsEndpoint}, {@code cloudWatchEndpoint}. See launcher/README.md.
 *
 * <p>SIGTERM / SIGINT start the scheduler's graceful shutdown (children get
 * {@code shutdownRequested}, then {@code leaseLost}), bounded by {@code shutdownGraceMillis}; the
 * exit code is 0 when it finished cleanly in time, 1 otherwise.
 */
public final class StreamsMultiLangLauncher {

    static final String KEY_REGION = "regionName";
    static final String KEY_DYNAMODB_ENDPOINT = "dynamoDBEndpoint";
    static final String KEY_STREAMS_ENDPOINT = "dynamoDBStreamsEndpoint";
    static final String KEY_CLOUDWATCH_ENDPOINT = "cloudWatchEndpoint";
    static final long DEFAULT_SHUTDOWN_GRACE_MILLIS = 25_000L;
    static final int ADAPTER_RETRY_ATTEMPTS = 10;
    static final long ADAPTER_RETRY_BASE_MILLIS = 100L;
    static final long ADAPTER_RETRY_MAX_MILLIS = 10_000L;
    static final String LOGBACK_PROPERTY = "logback.configurationFile";
    static final String LOGBACK_RESOURCE = "worker-kcl-logback.xml";
    static final String LOGBACK_JSON_RESOURCE = "worker-kcl-logback-json.xml";
    static final String LOG_FORMAT_ENV = "WORKER_KCL_LOG_FORMAT";

    private StreamsMultiLangLauncher() {}

    public static void main(String[] args) {
        if (args.length != 1 || args[0].isEmpty() || args[0].startsWith("-")) {
            System.err.println("usage: java -cp <jars> " + StreamsMultiLangLauncher.class.getName()
                    + " <multilang.properties>");
            System.exit(2);
        }
        // Before the first logger exists; an explicit -Dlogback.configurationFile wins.
        if (System.getProperty(LOGBACK_PROPERTY) == null) {
            boolean json = "json".equalsIgnoreCase(System.getenv(LOG_FORMAT_ENV));
            System.setProperty(LOGBACK_PROPERTY, json ? LOGBACK_JSON_RESOURCE : LOGBACK_RESOURCE);
        }
        Logger log = LoggerFactory.getLogger(StreamsMultiLangLauncher.class);
        int exitCode;
        try {
            exitCode = run(args[0], log);
        } catch (Throwable t) {
            log.error("KCL launcher failed: {}", t.toString(), t);
            exitCode = 1;
        }
        if (exitCode >= 0) {
            System.exit(exitCode);
        }
        // exitCode < 0: the JVM is already shutting down (signal); the hook decides the end.
    }

    /** Returns the exit code, or -1 when a shutdown hook (signal) ended the scheduler. */
    static int run(String propertiesPath, Logger log) throws IOException {
        MultiLangDaemonConfig daemonConfig = new MultiLangDaemonConfig(propertiesPath);
        MultiLangDaemonConfiguration cfg = daemonConfig.getMultiLangDaemonConfiguration();
        Properties raw = loadProperties(propertiesPath);

        String streamArn = cfg.getStreamName() == null ? "" : cfg.getStreamName().trim();
        if (!KinesisMapperUtil.isValidDynamoDBStreamArn(streamArn)) {
            throw new IllegalArgumentException("streamName must be a DynamoDB stream ARN "
                    + "(arn:aws:dynamodb:<region>:<12-digit account>:table/<table>/stream/<label>), got '"
                    + streamArn + "'");
        }
        Region region = Region.of(required(raw, KEY_REGION));

        AwsCredentialsProvider creds = cfg.getKinesisCredentialsProvider().build(AwsCredentialsProvider.class);
        AwsCredentialsProvider ddbCreds = cfg.getDynamoDBCredentialsProvider().isDirty()
                ? cfg.getDynamoDBCredentialsProvider().build(AwsCredentialsProvider.class)
                : creds;
        AwsCredentialsProvider cwCreds = cfg.getCloudWatchCredentialsProvider().isDirty()
                ? cfg.getCloudWatchCredentialsProvider().build(AwsCredentialsProvider.class)
                : creds;

        // DynamoDB Streams, seen by KCL as a Kinesis client.
        String streamsEndpoint = optional(raw, KEY_STREAMS_ENDPOINT);
        AmazonDynamoDBStreamsAdapterClient adapterClient;
        if (streamsEndpoint == null) {
            adapterClient = new AmazonDynamoDBStreamsAdapterClient(creds, region); // adapter's retry policy
        } else {
            // The adapter's own constructor sets this retry strategy; keep it with an endpoint too.
            DynamoDbStreamsClient streams = DynamoDbStreamsClient.builder()
                    .region(region)
                    .credentialsProvider(creds)
                    .endpointOverride(URI.create(streamsEndpoint))
                    .overrideConfiguration(ClientOverrideConfiguration.builder()
                            .retryStrategy(adapterRetryStrategy())
                            .build())
                    .build();
            adapterClient = new AmazonDynamoDBStreamsAdapterClient(streams, region);
        }

        // Lease, worker-metrics and coordinator-state tables.
        var dynamoBuilder = DynamoDbAsyncClient.builder().region(region).credentialsProvider(ddbCreds);
        String dynamoEndpoint = optional(raw, KEY_DYNAMODB_ENDPOINT);
        if (dynamoEndpoint != null) {
            dynamoBuilder.endpointOverride(URI.create(dynamoEndpoint));
        }
        DynamoDbAsyncClient dynamo = dynamoBuilder.build();

        var cloudWatchBuilder = CloudWatchAsyncClient.builder().region(region).credentialsProvider(cwCreds);
        String cloudWatchEndpoint = optional(raw, KEY_CLOUDWATCH_ENDPOINT);
        if (cloudWatchEndpoint != null) {
            cloudWatchBuilder.endpointOverride(URI.create(cloudWatchEndpoint));
        }
        CloudWatchAsyncClient cloudWatch = cloudWatchBuilder.build();

        if (cfg.getInitialPositionInStreamExtended() == null) {
            cfg.setInitialPositionInStream(InitialPositionInStream.TRIM_HORIZON); // KCL's own default is LATEST
        }
        InitialPositionInStreamExtended initialPosition = cfg.getInitialPositionInStreamExtended();
        StreamTracker tracker = StreamsSchedulerFactory.createSingleStreamTracker(streamArn, initialPosition);

        MultiLangRecordProcessorFactory multiLang = daemonConfig.getRecordProcessorFactory();
        ShardRecordProcessorFactory processorFactory =
                () -> new MultiLangStreamsRecordProcessor(multiLang.shardRecordProcessor());

        ConfigsBuilder configs = new ConfigsBuilder(
                tracker,
                cfg.getApplicationName(),
                adapterClient,
                dynamo,
                cloudWatch,
                cfg.getWorkerIdentifier(),
                processorFactory);

        // Apply the properties the way MultiLangDaemonConfiguration.resolvedConfiguration does
        // (that method is package-private): ConfigsBuilder first (tableName), then the rest.
        Map<Class<?>, Object> targets = new HashMap<>();
        targets.put(ConfigsBuilder.class, configs);
        Set<Class<?>> onlyConfigsBuilder = new HashSet<>(Arrays.asList(ConfigsBuilder.class));
        Set<Class<?>> skipPolling = new HashSet<>(Arrays.asList(PollingConfig.class));
        ConfigurationSettableUtils.resolveFields(cfg, targets, onlyConfigsBuilder, skipPolling);

        CheckpointConfig checkpointConfig = configs.checkpointConfig();
        CoordinatorConfig coordinatorConfig = configs.coordinatorConfig();
        LeaseManagementConfig leaseManagementConfig = configs.leaseManagementConfig();
        LifecycleConfig lifecycleConfig = configs.lifecycleConfig();
        MetricsConfig metricsConfig = configs.metricsConfig();
        ProcessorConfig processorConfig = configs.processorConfig();
        RetrievalConfig retrievalConfig = configs.retrievalConfig();
        for (Object o : new Object[] {
            checkpointConfig, coordinatorConfig, leaseManagementConfig, lifecycleConfig,
            metricsConfig, processorConfig, retrievalConfig
        }) {
            targets.put(o.getClass(), o);
        }

        ConfigurationSettableUtils.resolveFields(
                cfg.getCoordinatorStateTableConfigBean(), coordinatorConfig.coordinatorStateTableConfig());
        ConfigurationSettableUtils.resolveFields(
                cfg.getGracefulLeaseHandoffConfigBean(), leaseManagementConfig.gracefulLeaseHandoffConfig());
        ConfigurationSettableUtils.resolveFields(
                cfg.getWorkerUtilizationAwareAssignmentConfigBean(),
                leaseManagementConfig.workerUtilizationAwareAssignmentConfig());
        ConfigurationSettableUtils.resolveFields(
                cfg.getWorkerMetricStatsTableConfigBean(),
                leaseManagementConfig.workerUtilizationAwareAssignmentConfig().workerMetricsTableConfig());

        // Always polling (DynamoDB Streams has no fan-out); the multilang polling keys still apply.
        DynamoDBStreamsPollingConfig polling = new DynamoDBStreamsPollingConfig(streamArn, adapterClient);
        Map<Class<?>, Object> pollingTarget = new HashMap<>();
        pollingTarget.put(PollingConfig.class, polling);
        ConfigurationSettableUtils.resolveFields(cfg.getPollingConfig(), pollingTarget, null, null);
        retrievalConfig.retrievalSpecificConfig(polling);

        // RetrievalConfig is skipped: the initial position is already in the adapter's tracker.
        Set<Class<?>> skipped = new HashSet<>(
                Arrays.asList(ConfigsBuilder.class, PollingConfig.class, RetrievalConfig.class));
        ConfigurationSettableUtils.resolveFields(cfg, targets, null, skipped);

        if (metricsConfig.metricsLevel() == MetricsLevel.NONE) {
            metricsConfig.metricsFactory(new NullMetricsFactory()); // no CloudWatch calls at all
        }

        Scheduler scheduler = StreamsSchedulerFactory.createScheduler(
                checkpointConfig,
                coordinatorConfig,
                leaseManagementConfig,
                lifecycleConfig,
                metricsConfig,
                processorConfig,
                retrievalConfig,
                adapterClient);

        long graceMillis = cfg.getShutdownGraceMillis() > 0
                ? cfg.getShutdownGraceMillis()
                : DEFAULT_SHUTDOWN_GRACE_MILLIS;
        AtomicBoolean signalled = new AtomicBoolean(false);
        // SIGTERM / SIGINT: graceful shutdown, then exit 0 when it finished cleanly within the grace
        // period (1 otherwise). A second signal halts at once.
        SignalHandler onSignal = sig -> {
            if (!signalled.compareAndSet(false, true)) {
                log.warn("Second signal ({}); halting", sig.getName());
                Runtime.getRuntime().halt(128 + sig.getNumber());
            }
            Thread stopper = new Thread(() -> {
                boolean clean = gracefulShutdown(scheduler, graceMillis, "SIG" + sig.getName(), log);
                System.exit(clean ? 0 : 1);
            }, "kcl-shutdown");
            stopper.start();
        };
        Signal.handle(new Signal("TERM"), onSignal);
        Signal.handle(new Signal("INT"), onSignal);
        // Any other end of the JVM (KCL's multilang code calls System.exit(1) when a child breaks the
        // protocol): still try to shut the scheduler down gracefully; the exit code stays.
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            if (signalled.compareAndSet(false, true)) {
                gracefulShutdown(scheduler, graceMillis, "JVM exit", log);
            }
        }, "kcl-shutdown-hook"));

        log.info("Starting KCL scheduler: application={} stream={} worker={} initialPosition={} region={}",
                cfg.getApplicationName(), streamArn, cfg.getWorkerIdentifier(),
                initialPosition.getInitialPositionInStream(), region.id());
        Thread schedulerThread = new Thread(scheduler, "kcl-scheduler");
        schedulerThread.start();
        try {
            schedulerThread.join();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        if (signalled.get()) {
            return -1;
        }
        log.error("KCL scheduler stopped without a shutdown request (see the errors above)");
        return 1;
    }

    /**
     * The retry strategy {@code AmazonDynamoDBStreamsAdapterClient(credentials, region)} gives its
     * streams client (adapter 2.0.1 to 2.3.0): SDK standard retries, 10 attempts, exponential
     * backoff from 100 ms to 10 s, for throttling as well.
     */
    static StandardRetryStrategy adapterRetryStrategy() {
        BackoffStrategy backoff = BackoffStrategy.exponentialDelay(
                Duration.ofMillis(ADAPTER_RETRY_BASE_MILLIS), Duration.ofMillis(ADAPTER_RETRY_MAX_MILLIS));
        return SdkDefaultRetryStrategy.standardRetryStrategy().toBuilder()
                .maxAttempts(ADAPTER_RETRY_ATTEMPTS)
                .backoffStrategy(backoff)
                .throttlingBackoffStrategy(backoff)
                .build();
    }

    /** Returns whether the scheduler shut down cleanly within {@code graceMillis}. */
    static boolean gracefulShutdown(Scheduler scheduler, long graceMillis, String why, Logger log) {
        log.info("Shutdown requested ({}); graceful KCL shutdown (up to {} ms)", why, graceMillis);
        try {
            boolean clean = scheduler.startGracefulShutdown().get(graceMillis, TimeUnit.MILLISECONDS);
            log.info("Graceful shutdown finished (clean={})", clean);
            return clean;
        } catch (TimeoutException e) {
            log.warn("Graceful shutdown did not finish within {} ms; stopping now", graceMillis);
        } catch (Exception e) {
            log.error("Graceful shutdown failed", e);
        }
        scheduler.shutdown();
        return false;
    }

    static Properties loadProperties(String path) throws IOException {
        Properties props = new Properties();
        Path file = Paths.get(path);
        if (Files.isRegularFile(file)) {
            try (Reader in = Files.newBufferedReader(file, StandardCharsets.ISO_8859_1)) {
                props.load(in);
            }
            return props;
        }
        // MultiLangDaemonConfig also accepts a class-path resource; mirror that.
        try (InputStream in = Thread.currentThread().getContextClassLoader().getResourceAsStream(path)) {
            if (in == null) {
                throw new IOException("properties file not found: " + path);
            }
            props.load(in);
        }
        return props;
    }

    static String optional(Properties props, String key) {
        String v = props.getProperty(key);
        return v == null || v.trim().isEmpty() ? null : v.trim();
    }

    static String required(Properties props, String key) {
        String v = optional(props, key);
        if (v == null) {
            throw new IllegalArgumentException("missing required property '" + key + "'");
        }
        return v;
    }
}
