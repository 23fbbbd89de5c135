package worker.kcl;

import java.util.ArrayList;
import java.util.List;

import com.amazonaws.services.dynamodbv2.streamsadapter.model.DynamoDBStreamsProcessRecordsInput;
import com.amazonaws.services.dynamodbv2.streamsadapter.processor.DynamoDBStreamsShardRecordProcessor;
import software.amazon.kinesis.lifecycle.events.InitializationInput;
import software.amazon.kinesis.lifecycle.events.LeaseLostInput;
import software.amazon.kinesis.lifecycle.events.ProcessRecordsInput;
import software.amazon.kinesis.lifecycle.events.ShardEndedInput;
import software.amazon.kinesis.lifecycle.events.ShutdownRequestedInput;
import software.amazon.kinesis.processor.ShardRecordProcessor;
import software.amazon.kinesis.retrieval.KinesisClientRecord;

/**
 * Presents KCL's multilang record processor (one child process per shard) as the
 * {@link DynamoDBStreamsShardRecordProcessor} that the adapter's scheduler factory insists on.
 *
 * <p>Every call is passed through unchanged. The adapter's default
 * {@code processRecords(ProcessRecordsInput)} would cast each record and rebuild the input;
 * the multilang processor only reads the plain {@link KinesisClientRecord} fields, so the
 * original input is forwarded as it is.
 */
final class MultiLangStreamsRecordProcessor implements DynamoDBStreamsShardRecordProcessor {

    private final ShardRecordProcessor delegate;

    MultiLangStreamsRecordProcessor(ShardRecordProcessor delegate) {
        this.delegate = delegate;
    }

    @Override
    public void initialize(InitializationInput initializationInput) {
        delegate.initialize(initializationInput);
    }

    @Override
    public void processRecords(ProcessRecordsInput processRecordsInput) {
        delegate.processRecords(processRecordsInput);
    }

    /** Only reached if something calls the adapter-typed overload directly; converts back. */
    @Override
    public void processRecords(DynamoDBStreamsProcessRecordsInput input) {
        List<KinesisClientRecord> records =
                input.records() == null ? new ArrayList<>() : new ArrayList<>(input.records());
        delegate.processRecords(ProcessRecordsInput.builder()
                .records(records)
                .checkpointer(input.checkpointer())
                .cacheEntryTime(input.cacheEntryTime())
                .cacheExitTime(input.cacheExitTime())
                .millisBehindLatest(input.millisBehindLatest())
                .childShards(input.childShards())
                .isAtShardEnd(input.isAtShardEnd())
                .build());
    }

    @Override
    public void leaseLost(LeaseLostInput leaseLostInput) {
        delegate.leaseLost(leaseLostInput);
    }

    @Override
    public void shardEnded(ShardEndedInput shardEndedInput) {
        delegate.shardEnded(shardEndedInput);
    }

    @Override
    public void shutdownRequested(ShutdownRequestedInput shutdownRequestedInput) {
        delegate.shutdownRequested(shutdownRequestedInput);
    }
}
